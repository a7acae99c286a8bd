"""ZSL metrics: per-class mean top-1 accuracy, ZSL T1, GZSL U/S/H, continual mSA/mUA/mH.

The test-set metrics (:func:`zsl_gzsl_metrics`, :func:`continual_task_metrics`) score the rows in
blocks and keep only per-class hit and sample counts, so memory is O(block × classes), never
N × classes; in a process group each rank scores its own contiguous shard of the rows and the
integer counts are summed over ranks (:mod:`zslfast.distributed`), which makes the
distributed result exactly the single-process one.
"""
import torch

from zslfast.distributed import all_reduce_sum, shard


def class_counts(pred, target, num_classes):
    """(hits, total): int64 [num_classes] counts of correct predictions and of samples per target class."""
    pred, target = torch.as_tensor(pred).reshape(-1), torch.as_tensor(target).reshape(-1)
    total = torch.bincount(target, minlength=num_classes)
    hits = torch.bincount(target[pred == target], minlength=num_classes)
    return hits, total


def accuracy_from_counts(hits, total):
    """Mean over the classes with samples of hits / total, a float in [0, 1]; 0.0 with no samples."""
    present = total > 0
    if not bool(present.any()):
        return 0.0
    return float((hits[present].double() / total[present].double()).mean())


def per_class_accuracy(pred, target):
    """Mean over the classes present in ``target`` of each class's top-1 accuracy (vectorised with
    bincount). Returns a float in [0, 1]; 0.0 for an empty target."""
    pred, target = torch.as_tensor(pred).reshape(-1), torch.as_tensor(target).reshape(-1)
    if target.numel() == 0:
        return 0.0
    n = int(max(int(target.max()), int(pred.max()) if pred.numel() else 0)) + 1
    return accuracy_from_counts(*class_counts(pred, target, n))


def sharded_counts(predict_fn, x, y, num_classes, outputs=1, batch_size=8192):
    """Per-class (hits, total) of each of the ``outputs`` predictions ``predict_fn(block) -> (class
    ids, ...)`` over the rows of (x, y): this rank's shard scored in blocks of ``batch_size`` rows,
    the counts kept on the rows' device and summed over the ranks. Returns one (hits, total) each."""
    start, stop = shard(x.shape[0])
    counts = [torch.zeros(2, num_classes, dtype=torch.long, device=y.device) for _ in range(outputs)]
    with torch.no_grad():
        for i in range(start, stop, batch_size):
            yb = y[i:min(i + batch_size, stop)]
            for c, pred in zip(counts, predict_fn(x[i:min(i + batch_size, stop)])):
                c += torch.stack(class_counts(pred.to(yb.device), yb, num_classes))
    return [tuple(all_reduce_sum(c)) for c in counts]


def sharded_accuracy(predict_fn, x, y, num_classes, batch_size=8192):
    """Per-class mean top-1 accuracy in [0, 1] of ``predict_fn(block) -> class ids`` over the rows of
    (x, y), through :func:`sharded_counts` (rows sharded over the ranks of a process group)."""
    return accuracy_from_counts(*sharded_counts(lambda b: (predict_fn(b),), x, y, num_classes, 1, batch_size)[0])


def harmonic_mean(s, u):
    """H = 2·S·U/(S+U), 0 when either is 0."""
    return 0.0 if s <= 0 or u <= 0 else 2 * s * u / (s + u)


def predict(scores, classes=None, seen_classes=None, calibration=0.0):
    """Predicted class ids from class scores [n, C] (higher = more likely).

    ``classes`` restricts the argmax to those class ids (ZSL: the unseen classes); calibrated
    stacking subtracts ``calibration`` from the scores of ``seen_classes`` (GZSL).
    """
    if calibration and seen_classes is not None:
        scores = scores.clone()
        scores[:, seen_classes.to(scores.device)] -= calibration
    if classes is None:
        return scores.argmax(1)
    classes = classes.to(scores.device)
    return classes[scores[:, classes].argmax(1)]


def zsl_gzsl_metrics(score_fn, data, calibration=0.0, batch_size=8192):
    """ZSL T1 and GZSL S/U/H of a scoring function on ``data``'s test splits.

    ``score_fn(features) -> scores [n, C]`` over all classes. ZSL T1: test_unseen samples,
    prediction among the unseen classes. GZSL: prediction among all classes; S on test_seen, U on
    test_unseen, H their harmonic mean. All accuracies are per-class means, in percent.
    """
    seen, unseen, k = data.seen_classes, data.unseen_classes, data.num_classes

    def unseen_predictions(x):  # ZSL and GZSL predictions of a block from one scoring
        scores = score_fn(x)
        return predict(scores, unseen), predict(scores, None, seen, calibration)

    with data.scoring():  # on a sealed dataset: one of the run's final scorings, reading the rows only
        test_unseen, test_seen = data.subset("test_unseen"), data.subset("test_seen")
    t1, u = sharded_counts(unseen_predictions, *test_unseen, k, 2, batch_size)
    (s,) = sharded_counts(lambda x: (predict(score_fn(x), None, seen, calibration),), *test_seen, k, 1, batch_size)
    t1, u, s = (accuracy_from_counts(*c) for c in (t1, u, s))
    return {"zsl_t1": 100 * t1, "gzsl_s": 100 * s, "gzsl_u": 100 * u, "gzsl_h": 100 * harmonic_mean(s, u)}


def continual_task_metrics(predict_fn, features, labels, seen_idx, unseen_idx, batch_size=8192):
    """S, U (percent, per-class mean top-1 of all-class predictions) and H of one continual task:
    ``predict_fn(features) -> class ids``; ``seen_idx`` / ``unseen_idx`` index the task's test images
    of the classes seen so far and of the others."""
    num_classes = int(labels.max()) + 1 if labels.numel() else 0

    def acc(idx):
        idx = idx.to(features.device)
        return sharded_accuracy(predict_fn, features[idx], labels[idx], num_classes, batch_size)

    s, u = acc(seen_idx), acc(unseen_idx)
    return {"S": 100 * s, "U": 100 * u, "H": 100 * harmonic_mean(s, u)}


def continual_summary(per_task):
    """mSA, mUA, mH over tasks from per-task dicts with ``S``, ``U``, ``H`` (mH is the mean of the
    per-task H, not the H of the means, as in the GRW protocol)."""
    if not per_task:
        return {"mSA": 0.0, "mUA": 0.0, "mH": 0.0}
    n = len(per_task)
    return {"mSA": sum(t["S"] for t in per_task) / n, "mUA": sum(t["U"] for t in per_task) / n,
            "mH": sum(t["H"] for t in per_task) / n}


def seen_unseen_curve(seen_scores, seen_labels, unseen_scores, unseen_labels, seen_classes, unseen_classes,
                      max_points=201):
    """The seen–unseen accuracy curve of calibrated stacking and the area under it (AUSUC; Chao,
    Changpinyo, Gong & Sha, ECCV 2016), computed exactly.

    Calibrated stacking subtracts γ from every seen class's GZSL score before the argmax over all
    classes. A test sample's prediction is its best seen class while γ < d (d: its best seen score
    minus its best unseen score) and its best unseen class from γ = d on, so GZSL S (per-class mean
    accuracy on ``seen_scores`` [Ns, K], labels ``seen_labels``) and U (on ``unseen_scores``) are
    step functions of γ that change only at the samples' d. Sweeping γ over every d gives every
    reachable (S, U) pair: from (the accuracy among the seen classes alone, 0) at γ = −∞ to
    (0, the accuracy among the unseen classes alone) at γ = +∞. The area is the trapezoid rule over
    those points in γ order (a sampled sweep of γ converges to it).

    Returns ``{"ausuc", "S", "U", "gamma", "at_run"}``: the area in percent of the unit square (S
    and U as fractions; 100 × Chao et al.'s number), up to ``max_points`` curve points (S, U in
    percent; ``gamma`` their γ relative to the scores given, ``None`` for −∞; evenly thinned, the two
    ends kept), and ``at_run``: S, U, H at γ = 0, the scores' own operating point (the run's GZSL
    S/U/H when the scores carry the run's calibration).
    """
    seen_classes = torch.as_tensor(seen_classes).reshape(-1).cpu()
    unseen_classes = torch.as_tensor(unseen_classes).reshape(-1).cpu()

    def events(scores, labels, want_seen):
        scores, labels = scores.detach().double().cpu(), torch.as_tensor(labels).reshape(-1).cpu()
        if labels.numel() == 0:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        best_seen, arg_seen = scores[:, seen_classes].max(1)
        best_unseen, arg_unseen = scores[:, unseen_classes].max(1)
        pred = (seen_classes if want_seen else unseen_classes)[arg_seen if want_seen else arg_unseen]
        counts = torch.bincount(labels)
        weight = 1.0 / (counts[labels].double() * int((counts > 0).sum()))  # per-class mean accuracy
        hit = pred == labels
        return (best_seen - best_unseen)[hit], weight[hit]

    d_s, w_s = events(seen_scores, seen_labels, True)    # adds to S while γ < d
    d_u, w_u = events(unseen_scores, unseen_labels, False)  # adds to U once γ >= d
    thresholds = torch.unique(torch.cat([d_s, d_u]))  # sorted
    # S(t) = sum of w_s over d_s > t; U(t) = sum of w_u over d_u <= t, at every threshold t
    s_order, u_order = torch.argsort(d_s), torch.argsort(d_u)
    s_cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w_s[s_order], 0)])
    u_cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w_u[u_order], 0)])
    s_at = s_cum[-1] - s_cum[torch.searchsorted(d_s[s_order], thresholds, right=True)]
    u_at = u_cum[torch.searchsorted(d_u[u_order], thresholds, right=True)]
    s_curve = torch.cat([s_cum[-1:], s_at])  # γ = −∞ first
    u_curve = torch.cat([torch.zeros(1, dtype=torch.float64), u_at])
    area = float(((s_curve[:-1] - s_curve[1:]) * (u_curve[:-1] + u_curve[1:]) / 2).sum())
    s0 = float(w_s[d_s > 0].sum())
    u0 = float(w_u[d_u <= 0].sum())
    keep = torch.unique(torch.linspace(0, s_curve.numel() - 1, min(max_points, s_curve.numel())).round().long())
    gammas = [None] + [float(t) for t in thresholds]
    return {"ausuc": 100 * area,
            "S": [100 * float(s_curve[i]) for i in keep], "U": [100 * float(u_curve[i]) for i in keep],
            "gamma": [gammas[int(i)] for i in keep],
            "at_run": {"S": 100 * s0, "U": 100 * u0, "H": 100 * harmonic_mean(s0, u0)}}
