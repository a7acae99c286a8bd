"""The generative evaluation (zslfast.eval.generative): the ZSL classifier's output layer (U-way as
f-CLSWGAN / SC-EGG, or S+U-wide as GSMFlow's TMM code) and fresh, replayable draws per evaluation."""
import pytest
import torch

import zslfast.eval.generative as generative
from zslfast.data.dataset import ZSLDataset
from zslfast.engine import RunContext
from zslfast.engine.context import stream_seed
from zslfast.engine.loop import train_epochs
from zslfast.engine.samplers import ShuffledBatches

UNSEEN = [1, 3, 5]  # not contiguous, not first: a label mapped to 0..U-1 is not a class id


def _separable():
    """6 classes, unseen 1/3/5; every image of class c is 5·e_c plus small noise, so a linear
    classifier trained on such features is right on every test image."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(12)
    feats = 5 * torch.eye(6)[labels] + 0.1 * torch.randn(72, 6, generator=g)
    pos = torch.arange(72) % 12
    unseen = torch.isin(labels, torch.tensor(UNSEEN))
    splits = {"trainval": torch.nonzero(~unseen & (pos < 8)).flatten(),
              "test_seen": torch.nonzero(~unseen & (pos >= 8)).flatten(),
              "test_unseen": torch.nonzero(unseen & (pos < 6)).flatten()}
    return ZSLDataset("separable", feats, labels, torch.eye(6), [str(c) for c in range(6)], splits)


def _synthesize(draws):
    def synthesize(classes, k, g):
        z = torch.randn(classes.numel() * k, 6, generator=g)
        draws.append(z)
        return 5 * torch.eye(6)[classes.repeat_interleave(k)] + 0.1 * z, classes.repeat_interleave(k)
    return synthesize


CLASSIFIER = {"lr": 0.1, "epochs": 30, "batch_size": 16}


@pytest.mark.parametrize("outputs,width,labels", [("unseen", 3, [0, 1, 2]), ("all", 6, UNSEEN)])
def test_zsl_classifier_outputs(monkeypatch, outputs, width, labels):
    """``unseen``: the ZSL classifier has U outputs, is trained on labels mapped to 0..U-1 in the
    order of the sorted unseen ids, and its predictions are mapped back (T1 100 on separable data;
    unmapped predictions would score 0). ``all``: K outputs trained on the class ids."""
    calls = []
    real = generative.train_softmax_classifier

    def spy(x, y, num_classes, *a, **k):
        calls.append((num_classes, y.clone(), x.clone()))
        return real(x, y, num_classes, *a, **k)

    monkeypatch.setattr(generative, "train_softmax_classifier", spy)
    data = _separable()
    metrics, _ = generative.generative_evaluation(_synthesize([]), data, 10, {**CLASSIFIER, "zsl_outputs": outputs},
                                                  RunContext(progress=False))
    (gk, gy, _), (zk, zy, zx) = calls
    assert gk == 6 and set(gy.tolist()) == {0, 2, 4, *UNSEEN}  # GZSL: all classes, class ids
    assert zk == width and sorted(set(zy.tolist())) == labels
    ids = torch.tensor(UNSEEN)[zy] if outputs == "unseen" else zy
    assert torch.equal(zx.argmax(1), ids)  # each synthetic row's target is its own class
    assert metrics["zsl_t1"] == 100.0


def test_zsl_outputs_refuses_an_unknown_value():
    with pytest.raises(ValueError, match="zsl_outputs"):
        generative.generative_evaluation(_synthesize([]), _separable(), 2, {**CLASSIFIER, "zsl_outputs": "some"},
                                         RunContext(progress=False))


def test_each_evaluation_draws_fresh_replayable_noise():
    """Evaluations with different keys draw different synthesis noise (and so classifier inits and
    batch orders); the same key draws the same noise again (a resumed or distributed run); outside
    any keyed evaluation the plain ``synthesis`` stream is used; and the training loop keys each
    evaluation by its stage and epoch."""
    data, ctx, draws = _separable(), RunContext(seed=3, progress=False), []
    cfg = {**CLASSIFIER, "epochs": 1}
    for key in ("stage 3/epoch 1", "stage 3/epoch 2", "stage 3/epoch 1"):
        with ctx.evaluation(key):
            generative.generative_evaluation(_synthesize(draws), data, 4, cfg, ctx)
    generative.generative_evaluation(_synthesize(draws), data, 4, cfg, ctx)
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    plain = torch.Generator().manual_seed(stream_seed(3, "synthesis"))
    assert torch.equal(draws[3], torch.randn(draws[3].shape, generator=plain))

    def seeds_per_evaluation():
        seen = []
        batches = ShuffledBatches(4, 2, torch.Generator().manual_seed(0), "cpu")
        train_epochs("flow", 4, batches, lambda idx: None, ctx,
                     evaluate=lambda epoch: seen.append(ctx.rng("synthesis", keyed=True).initial_seed()) or 0.0)
        return seen

    first = seeds_per_evaluation()
    assert len(set(first)) == 4 and first == seeds_per_evaluation()
    assert first[0] == stream_seed(3, "synthesis@flow/epoch 1")
