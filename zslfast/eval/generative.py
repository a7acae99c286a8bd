"""The shared evaluation stage of generative ZSL methods (GSMFlow, SC-EGG).

Given a trained generator, :func:`generative_evaluation`:

1. synthesizes ``n_per_class`` features for every unseen class of the data it is given, drawn from
   the run's ``synthesis`` stream keyed by the evaluation (its stage and epoch), on the training
   device: every evaluated epoch draws fresh noise, a fresh classifier initialisation and a fresh
   batch order, as the originals' continuing RNGs do, and a resumed or distributed run draws the
   same ones (an evaluation outside a training loop, e.g. of the refitted model, uses the plain
   stream);
2. trains the GZSL softmax classifier on real trainval (seen) + synthetic unseen features and the
   ZSL classifier on synthetic unseen features only (:func:`zslfast.eval.classifier.train_softmax_classifier`);
3. reports ZSL T1 and GZSL S/U/H on the data's test splits.

The ZSL classifier's output layer (``classifier["zsl_outputs"]``):

- ``unseen`` (f-CLSWGAN's ``CLASSIFIER`` with ``nclass = U``, which SC-EGG and TF-VAEGAN inherit):
  U outputs trained on the labels mapped to 0..U-1, predictions mapped back to class ids;
- ``all`` (GSMFlow's TMM code, ``main.py`` with ``--zsl``: ``nclass = S + U`` with labels
  0..U-1): K outputs of which only the unseen classes' are ever targets, the argmax taken over all
  K, so a prediction of a never-targeted (seen) column counts as wrong.

Each classifier's number of epochs is either chosen (``select=True``: the best epoch on the given
data's own held-out splits, which are the validation view's in the default protocol and the real
test splits only with ``--select-on-test``) or given (``epochs``, e.g. the counts chosen on
validation). ``inputs`` maps classifier inputs, real and synthetic alike (SC-EGG trains its
classifiers on [x, Dec(x), Dec_hidden(x)]).

In a process group (:mod:`zslfast.distributed`) every rank synthesizes the same features (one
shared stream; the generator's cost is small next to the classifiers'), ``inputs`` maps each rank's
rows, the classifiers train data-parallel (each rank scores its rows of every batch) and the
accuracies come from sharded test rows with summed per-class counts.
"""
import torch

from zslfast.config.settings import ZSL_OUTPUTS
from zslfast.distributed import sharded
from zslfast.eval.classifier import train_softmax_classifier
from zslfast.eval.metrics import harmonic_mean, predict, sharded_accuracy



def conditional_synthesizer(generate, att):
    """``synthesize(classes, n, generator) -> (features, labels)`` of a conditional feature generator
    ``generate(z, a)`` (z ~ N(0, I) of the attributes' width, drawn from ``generator``): n features
    per class of ``classes`` from the class attributes ``att`` [K, A], without gradients."""

    @torch.no_grad()
    def synthesize(classes, n, g):
        a = att[classes].repeat_interleave(n, 0)
        z = torch.randn(a.shape[0], att.shape[1], generator=g, device=g.device, dtype=a.dtype).to(a.device)
        return generate(z, a), classes.repeat_interleave(n)

    return synthesize


def synthetic_budget(data, synth_per_class=None, synth_ratio=None):
    """Synthetic features per unseen class for ``data``: ``synth_ratio`` × the mean number of real
    trainval features per seen class when ``synth_ratio`` is set (so the budget follows the data),
    else the absolute ``synth_per_class``. Returns (count, record for results.json)."""
    real_per_seen = data.splits["trainval"].numel() / max(1, data.seen_classes.numel())
    n = max(1, round(synth_ratio * real_per_seen)) if synth_ratio is not None else int(synth_per_class)
    return n, {"per_unseen_class": n, "real_per_seen_class": round(real_per_seen, 2),
               "ratio": round(n / real_per_seen, 4)}


def feature_sample(groups, per_class=50):
    """{kind: {"x": CPU float32 [n, D], "y": [n]}}: the first ``per_class`` rows of every class of
    each (features, labels) group, a fixed subsample small enough to keep beside a run."""
    out = {}
    for kind, (x, y) in groups.items():
        keep = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in torch.unique(y)])
        keep = keep.sort().values
        out[kind] = {"x": x[keep].detach().float().cpu().clone(), "y": y[keep].cpu().clone()}
    return out


def generative_evaluation(synthesize, data, n_per_class, classifier, ctx, *, select=False, epochs=None,
                          calibration=0.0, inputs=None, keep=None):
    """Synthesize, train the final classifiers, evaluate (see the module docstring).

    Args:
        synthesize: ``synthesize(classes, n_per_class, generator) -> (features, labels)`` on the device.
        data: the dataset evaluated (a validation view or the full data), on the device.
        classifier: ``{"lr", "epochs", "batch_size"}`` of the final classifiers, optionally ``"init"``
            (``xavier``, the default, or ``normal``: see :class:`zslfast.eval.classifier.SoftmaxClassifier`)
            and ``"zsl_outputs"`` (``unseen``, the default, or ``all``: see the module docstring).
        select: choose each classifier's epoch on ``data``'s held-out splits.
        epochs: ``{"gzsl": n, "zsl": n}`` epoch counts when not selecting (default: ``classifier["epochs"]``).
        inputs: optional map applied to every classifier input.
        keep: a dict that receives the two trained classifiers (``gzsl``, ``zsl``), e.g. to export them.

    Returns:
        (metrics in percent, nested choices ``{"gzsl_classifier_epochs": {...}, "zsl_classifier_epochs": {...}}``).
    """
    device = ctx.device
    unseen, seen = data.unseen_classes.to(device), data.seen_classes.to(device)
    zsl_outputs = classifier.get("zsl_outputs", "unseen")
    if zsl_outputs not in ZSL_OUTPUTS:
        raise ValueError(f"classifier zsl_outputs must be one of {ZSL_OUTPUTS}, got {zsl_outputs!r}")
    g = ctx.rng("synthesis", device, keyed=True)
    syn_x, syn_y = synthesize(unseen, n_per_class, g)
    real_x, real_y = data.subset("trainval")
    # the test rows' features; their labels are read only where a classifier is scored (a sealed
    # dataset counts each such read as one of the run's final scorings)
    xs, xu = data.unlabelled("test_seen"), data.unlabelled("test_unseen")
    syn_raw = (syn_x, syn_y)
    if inputs is not None:  # each rank maps its rows, every rank gets all of them back
        with torch.no_grad():
            syn_x, real_x, xs, xu = (sharded(inputs, t) for t in (syn_x, real_x, xs, xu))
    epochs = epochs or {"gzsl": classifier["epochs"], "zsl": classifier["epochs"]}

    k = data.num_classes

    def test_labels():
        with data.scoring():
            return data.split_labels("test_seen"), data.split_labels("test_unseen")

    def gzsl(clf, labels):  # test rows sharded over the ranks of a process group, counts summed
        ys, yu = labels
        s = sharded_accuracy(lambda x: predict(clf(x), None, seen, calibration), xs, ys, k)
        u = sharded_accuracy(lambda x: predict(clf(x), None, seen, calibration), xu, yu, k)
        return s, u

    if zsl_outputs == "unseen":  # U outputs on labels 0..U-1; a prediction j means class unseen[j]
        zsl_y, zsl_k = torch.searchsorted(unseen, syn_y), unseen.numel()

        def zsl(clf, labels):
            return sharded_accuracy(lambda x: unseen[clf(x).argmax(1)], xu, labels[1], k)
    else:  # K outputs, argmax over all of them (GSMFlow's TMM code)
        zsl_y, zsl_k = syn_y, k

        def zsl(clf, labels):
            return sharded_accuracy(lambda x: clf(x).argmax(1), xu, labels[1], k)

    def fit(x, y, kind, score, num_classes):
        return train_softmax_classifier(
            x, y, num_classes, classifier["epochs"] if select else epochs[kind], classifier["lr"],
            classifier["batch_size"], select_fn=score if select else None, generator=g, ctx=ctx,
            desc=f"{kind} classifier", name=f"{kind}_classifier_epochs",
            init=classifier.get("init", "xavier"))

    # select: every classifier epoch is scored on the held-out rows, reading their labels each time
    clf, nested = fit(torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y]), "gzsl",
                      lambda m: harmonic_mean(*gzsl(m, test_labels())), k)
    zclf, nested_z = fit(syn_x, zsl_y, "zsl", lambda m: zsl(m, test_labels()), zsl_k)
    if keep is not None:
        keep.update(gzsl=clf, zsl=zclf)
    labels = test_labels()  # the scoring of the two final classifiers
    s, u = gzsl(clf, labels)
    metrics = {"zsl_t1": 100 * zsl(zclf, labels), "gzsl_s": 100 * s, "gzsl_u": 100 * u,
               "gzsl_h": 100 * harmonic_mean(s, u)}
    if ctx.save_features:  # the last evaluation's features, in the generator's space, for the t-SNE plot
        ys, yu = labels
        ctx.artifacts["features"] = feature_sample({"real_seen": (data.unlabelled("test_seen"), ys),
                                                    "real_unseen": (data.unlabelled("test_unseen"), yu),
                                                    "synthetic_unseen": syn_raw})
    return metrics, {**nested, **nested_z}
