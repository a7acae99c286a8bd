"""The final softmax classifier of generative ZSL methods (GSMFlow, SC-EGG, ...): a linear layer
trained with cross-entropy on real seen features plus synthetic unseen features, as in the methods'
shared ``classifier.py`` (reference note gsmflow.md §4): xavier-normal weights, zero bias,
Adam(lr, betas=(0.5, 0.999)) (fused), shuffled mini-batches with the partial last batch kept.

The original code evaluates on the *test* set after every epoch and keeps the best epoch. Here the
epoch is chosen by a caller-supplied ``select_fn`` through the engine's
:func:`zslfast.engine.selection.best_epoch` (normally a validation metric); a test-set metric
reproduces the original protocol and must be asked for explicitly (the CLI's ``--select-on-test``).
"""
from torch import nn

from zslfast.config.settings import CLASSIFIER_INITS
from zslfast.engine.context import RunContext
from zslfast.distributed import parallel, sharded
from zslfast.engine.loop import eval_mode, train_epochs
from zslfast.engine.samplers import ShuffledBatches
from zslfast.engine.selection import best_epoch
from zslfast.nn.functional import wide_linear
from zslfast.optim import adam




class SoftmaxClassifier(nn.Module):
    """Linear scores over all classes; ``forward`` returns logits [n, C]. ``init``: xavier-normal
    weights (the shared ``classifier.py`` of GSMFlow and others) or N(0, 0.02) (TF-VAEGAN's)."""

    def __init__(self, in_dim, num_classes, generator=None, device=None, init="xavier"):
        super().__init__()
        if init not in CLASSIFIER_INITS:
            raise ValueError(f"classifier init must be one of {CLASSIFIER_INITS}, got {init!r}")
        self.fc = nn.Linear(in_dim, num_classes, device=device)
        # Drawn from ``generator`` (not the global RNG) so that a classifier retrained from a saved
        # checkpoint with the same generator is the same classifier.
        if init == "xavier":
            nn.init.xavier_normal_(self.fc.weight, generator=generator)
        else:  # TF-VAEGAN's (and so SC-EGG's) classifier: N(0, 0.02)
            nn.init.normal_(self.fc.weight, 0.0, 0.02, generator=generator)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return wide_linear(x, self.fc.weight, self.fc.bias)  # the classifier's inputs are thousands wide


def train_softmax_classifier(features, labels, num_classes, epochs=25, lr=1e-3, batch_size=512, beta1=0.5,
                             select_fn=None, generator=None, ctx=None, desc="classifier", name="classifier_epochs",
                             init="xavier"):
    """Train a :class:`SoftmaxClassifier` on (features, labels), on the features' device.

    Args:
        select_fn: ``f(classifier) -> float`` evaluated after each epoch; the weights of the best
            epoch are returned. None: the last epoch.
        generator: the stream of the initial weights and the batch order, on the features' device.
        ctx: the run context (progress, callbacks); default: a silent one.
        init: the initial weights, ``xavier`` or ``normal`` (:class:`SoftmaxClassifier`).

    Returns:
        (classifier, {name: {"value": the epoch count used, "score", "history": [[epoch, score]]}}).
    """
    device = features.device
    ctx = ctx or RunContext(device=device, progress=False)
    clf = SoftmaxClassifier(features.shape[1], num_classes, generator=generator, device=device, init=init)
    # Fused (the same algorithm): at SUN's size the unfused step's temporaries cost a fifth of the
    # GZSL classifier's time (benchmarks/bench_generative.py)
    opt = adam(clf.parameters(), device, lr, betas=(beta1, 0.999))
    batches = ShuffledBatches(features.shape[0], batch_size, generator, device, last_batch="keep")
    net = parallel(clf)  # data-parallel in a process group: each rank scores its rows of the batch

    def step(idx):
        loss = nn.functional.cross_entropy(sharded(lambda i: net(features[i]), idx), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def fit(on_eval):
        train_epochs(desc, epochs, batches, step, ctx, evaluate=eval_mode(clf, on_eval, clf),
                     modules={"classifier": clf, "optimizer": opt}, nested=True)
        return clf

    clf.train()
    if select_fn is None:
        fit(None)
        clf.eval()
        return clf, {name: {"value": epochs, "score": None, "history": []}}
    clf, nested = best_epoch(name, fit, select_fn)
    clf.eval()
    return clf, nested
