"""ZSL metrics: per-class mean top-1 accuracy, ZSL T1, GZSL U/S/H, continual mSA/mUA/mH."""
import torch


def per_class_accuracy(pred, target):
    """Mean over the classes present in ``target`` of each class's top-1 accuracy (vectorised with
    bincount). Returns a float in [0, 1]; 0.0 for an empty target."""
    pred, target = torch.as_tensor(pred).reshape(-1), torch.as_tensor(target).reshape(-1)
    if target.numel() == 0:
        return 0.0
    n = int(max(int(target.max()), int(pred.max()) if pred.numel() else 0)) + 1
    total = torch.bincount(target, minlength=n)
    hits = torch.bincount(target[pred == target], minlength=n)
    present = total > 0
    return float((hits[present].double() / total[present].double()).mean())


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
    seen, unseen = data.seen_classes, data.unseen_classes

    def scores_of(split):
        x, y = data.subset(split)
        with torch.no_grad():
            s = torch.cat([score_fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        return s, y.to(s.device)

    su, yu = scores_of("test_unseen")
    ss, ys = scores_of("test_seen")
    t1 = per_class_accuracy(predict(su, unseen), yu)
    u = per_class_accuracy(predict(su, None, seen, calibration), yu)
    s = per_class_accuracy(predict(ss, None, seen, calibration), ys)
    return {"zsl_t1": 100 * t1, "gzsl_s": 100 * s, "gzsl_u": 100 * u, "gzsl_h": 100 * harmonic_mean(s, u)}


def continual_task_metrics(predict_fn, features, labels, seen_idx, unseen_idx, batch_size=8192):
    """S, U (percent, per-class mean top-1 of all-class predictions) and H of one continual task:
    ``predict_fn(features) -> class ids``; ``seen_idx`` / ``unseen_idx`` index the task's test images
    of the classes seen so far and of the others."""
    def acc(idx):
        idx = idx.to(features.device)
        x = features[idx]
        with torch.no_grad():
            pred = torch.cat([predict_fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        return per_class_accuracy(pred, labels[idx])

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
