"""The engine's pieces against hand-worked expectations: samplers' last-batch policies, the loop's
schedule / cadence / history / hooks, the selector's three modes and its sealed test splits, and
the named random streams."""
import pytest
import torch

from zslfast.data import make_synthetic
from zslfast.engine import RunContext
from zslfast.engine.context import stream_seed
from zslfast.engine.loop import Callback, train_epochs
from zslfast.engine.samplers import EpisodeBatches, EpisodeSampler, ShuffledBatches
from zslfast.engine.selection import BestTracker, Selector, best_epoch

CTX = RunContext(progress=False)


def _sizes(sampler):
    return [b.numel() for b in sampler.epoch()]


def test_last_batch_policies():
    g = torch.Generator().manual_seed(0)
    assert _sizes(ShuffledBatches(10, 4, g, "cpu", "keep")) == [4, 4, 2]
    assert _sizes(ShuffledBatches(10, 4, g, "cpu", "drop")) == [4, 4]
    assert _sizes(ShuffledBatches(10, 4, g, "cpu", "keep", min_size=3)) == [4, 4]
    assert _sizes(ShuffledBatches(10, 16, g, "cpu", "drop")) == [10]  # clipped to n, as GSMFlow's original
    assert len(ShuffledBatches(10, 4, g, "cpu", "keep")) == 3 and len(ShuffledBatches(9, 4, g, "cpu", "keep", 2)) == 2
    s = ShuffledBatches(10, 4, g, "cpu", "keep")
    first, second = torch.cat(list(s.epoch())), torch.cat(list(s.epoch()))
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)  # a fresh permutation


def test_an_epoch_resumed_inside_gives_the_rest_of_its_batches_and_the_same_next_epoch():
    """--resume inside an epoch: the remaining batches are the uninterrupted epoch's, and the
    generator ends where the uninterrupted one does (so the following epochs match too)."""
    full = ShuffledBatches(11, 3, torch.Generator().manual_seed(4), "cpu", "keep")
    first, second = list(full.epoch()), list(full.epoch())
    cut = ShuffledBatches(11, 3, torch.Generator().manual_seed(4), "cpu", "keep")
    it = cut.epoch()
    trained = [next(it), next(it)]
    start = cut.epoch_start.clone()  # what a mid-epoch checkpoint saves
    state_after = cut.generator.get_state()
    resumed = ShuffledBatches(11, 3, torch.Generator(), "cpu", "keep")
    resumed.generator.set_state(state_after)
    rest = list(resumed.epoch(skip=2, start_state=start))
    assert [b.tolist() for b in trained + rest] == [b.tolist() for b in first]
    assert [b.tolist() for b in resumed.epoch()] == [b.tolist() for b in second]


def test_batches_over_given_indices_draw_only_those():
    idx = torch.tensor([3, 8, 11, 40, 41])
    out = torch.cat(list(ShuffledBatches(None, 2, torch.Generator().manual_seed(1), "cpu", indices=idx).epoch()))
    assert sorted(out.tolist()) == idx.tolist()


def test_episode_batches_are_lazy_and_distinct():
    labels = torch.arange(6).repeat_interleave(5)
    sampler = EpisodeSampler(labels, torch.Generator().manual_seed(0))
    batches = list(EpisodeBatches(sampler, ways=3, shots=2, episodes=2, steps=4).epoch())
    assert len(batches) == 4
    for pos, cls in batches:
        assert pos.shape == (2, 3, 2) and cls.shape == (2, 3)
        for e in range(2):
            assert len(set(cls[e].tolist())) == 3 and (labels[pos[e]] == cls[e][:, None]).all()


def test_loop_schedule_cadence_history_and_callbacks():
    """7 epochs of 3 batches: StepLR(step 2, γ 0.5) stepped after every epoch gives epoch e the rate
    0.5^⌊(e−1)/2⌋; evaluation after epochs 3, 6 (every 3 from 2) and the last; the history holds each
    epoch's mean loss; a callback sees the stage start, every step, every epoch and the stage end;
    on_epoch_start runs before the epoch's batches."""
    w = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([w], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    lrs, events, order = [], [], []

    class Hook(Callback):
        def on_stage_start(self, run):
            events.append(("start", run.stage, run.index, run.epochs))

        def on_step_end(self, run, epoch, steps, sums):
            events.append(("step", epoch, steps, float(sums["loss"])))

        def on_epoch_end(self, event):
            events.append((event.stage, event.epoch, event.epochs))

        def on_stage_end(self, run):
            events.append(("end", len(run.records)))

    class Batches:
        def epoch(self):
            for i in range(3):
                order.append("batch")
                yield i

    def step(i):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        return {"loss": torch.tensor(float(i)), "other": torch.tensor(2.0)}

    ctx = RunContext(progress=False, callbacks=[Hook()])
    history = train_epochs("s", 7, Batches(), step, ctx, scheduler=sched, evaluate=lambda e: 10.0 * e,
                           eval_every=3, eval_start=2, on_epoch_start=lambda e: order.append(f"start{e}"))
    assert lrs == [0.5 ** ((e - 1) // 2) for e in range(1, 8) for _ in range(3)]
    assert history.scores() == [(3, 30.0), (6, 60.0), (7, 70.0)]
    assert [r["loss"] for r in history.records] == [{"loss": 1.0, "other": 2.0}] * 7
    assert [r["steps"] for r in history.records] == [3] * 7
    # the loss sums after each step: 0, 0 + 1, 0 + 1 + 2 (batches 0, 1, 2)
    assert events == [("start", "s", 0, 7), *[x for e in range(1, 8) for x in (
        ("step", e, 1, 0.0), ("step", e, 2, 1.0), ("step", e, 3, 3.0), ("s", e, 7))], ("end", 7)]
    assert order[:5] == ["start1", "batch", "batch", "batch", "start2"]


def test_best_tracker_keeps_the_first_best_and_copies_the_state():
    m = torch.nn.Linear(2, 1)
    t = BestTracker()
    for epoch, score in [(1, 0.2), (2, 0.5), (3, 0.5), (4, 0.1)]:
        t.update(epoch, score, module=m)
        if epoch == 2:
            kept = {k: v.clone() for k, v in m.state_dict().items()}
        with torch.no_grad():
            m.weight.add_(1.0)  # training goes on: the kept copy must not follow
    assert (t.candidate, t.score) == (2, 0.5)
    assert all(torch.equal(t.state[k], kept[k]) for k in kept)
    assert t.history == [[1, 0.2], [2, 0.5], [3, 0.5], [4, 0.1]]


def test_best_epoch_restores_that_epochs_weights():
    m = torch.nn.Linear(2, 1)
    snaps = []

    def fit(on_eval):
        for epoch in range(1, 5):
            with torch.no_grad():
                m.weight.add_(1.0)
            snaps.append(m.weight.detach().clone())
            on_eval(m, epoch)
        return m

    target = float(m.weight.detach().sum()) + 2 * 2  # the weights after epoch 2 (two entries, +1 each epoch)
    model, nested = best_epoch("k", fit, lambda mod: -abs(float(mod.weight.detach().sum()) - target))
    assert nested["k"]["value"] == 2 and torch.equal(model.weight, snaps[1])


def _epoch_fit(reads):
    """A stand-in training stage: its 'model' is a counter module; it scores epoch e as −|e − 3|."""
    def fit(view, epochs, on_eval, every, start, phase):
        reads.append((view.name, epochs, phase))
        m = torch.nn.Module()
        m.register_buffer("epoch", torch.zeros(()))
        for e in range(1, epochs + 1):
            m.epoch.fill_(e)
            if on_eval is not None and e >= start and (e % every == 0 or e == epochs):
                on_eval(m, e)
        return m
    return fit


def _evaluate(model, view):
    e = float(model.epoch)
    return {"gzsl_h": -abs(e - 3)}, None


@pytest.mark.parametrize("mode", ["validation", "test", "fixed"])
def test_selector_modes(mode):
    data = make_synthetic(seed=0)
    reads = []
    sel = Selector(data, RunContext(progress=False, selection=mode))
    fitted = sel.epochs("epochs", _epoch_fit(reads), _evaluate, 6)
    record = sel.to_dict()
    assert record["on"] == mode and set(record) == {"on", "metric", "choices"}
    if mode == "validation":  # chosen on the validation view, refitted on the data for that many epochs
        assert reads == [("synthetic[validation]", 6, "select"), ("synthetic", 3, "final")]
        assert fitted.epoch == 3 and fitted.metrics is None and float(fitted.model.epoch) == 3
    elif mode == "test":  # trained once on the data, restored to the best evaluation
        assert reads == [("synthetic", 6, "final")]
        assert fitted.epoch == 3 and fitted.metrics == {"gzsl_h": 0.0} and float(fitted.model.epoch) == 3
    else:
        assert reads == [("synthetic", 6, "final")] and record["choices"]["epochs"]["value"] == 6
    if mode != "fixed":
        assert record["choices"]["epochs"]["history"] == [[e, -abs(e - 3.0)] for e in range(1, 7)]


@pytest.mark.parametrize("mode", ["test", "validation"])
def test_independent_metrics_come_from_their_own_best_evaluation(mode):
    """SC-EGG's original protocol: with ``independent=("zsl",)`` the test-mode result takes H (and
    its S, U) from the best-H epoch and T1 from the best-T1 epoch, with their nested choices;
    the weights stay the best-H epoch's. Validation mode refits one model (the option is unused)."""
    data = make_synthetic(seed=0)

    def evaluate(model, view):
        e = float(model.epoch)  # H peaks at epoch 2, T1 at epoch 5
        return ({"zsl_t1": -abs(e - 5), "gzsl_s": e, "gzsl_h": -abs(e - 2)},
                {"gzsl_classifier_epochs": {"value": e}, "zsl_classifier_epochs": {"value": 10 * e}})

    sel = Selector(data, RunContext(progress=False, selection=mode))
    fitted = sel.epochs("gan_epochs", _epoch_fit([]), evaluate, 6, independent=("zsl",))
    choices = sel.to_dict()["choices"]
    assert fitted.epoch == 2 and float(fitted.model.epoch) == 2
    if mode == "test":
        assert fitted.metrics == {"zsl_t1": 0.0, "gzsl_s": 2.0, "gzsl_h": 0.0}
        assert fitted.nested == {"gzsl_classifier_epochs": {"value": 2.0}, "zsl_classifier_epochs": {"value": 50.0}}
        assert choices["gan_epochs"]["value"] == 2 and choices["gan_epochs[zsl]"]["value"] == 5
    else:
        assert fitted.metrics is None and set(choices) == {"gan_epochs"}


def test_reading_a_test_split_during_validation_selection_fails_loudly():
    data = make_synthetic(seed=0)
    sel = Selector(data, RunContext(progress=False))

    def leaky_fit(view, epochs, on_eval, every, start, phase):
        data.subset("test_unseen")  # a method peeking at the real test split while choosing
        return _epoch_fit([])(view, epochs, on_eval, every, start, phase)

    with pytest.raises(RuntimeError, match="test split 'test_unseen' was read during validation-based selection"):
        sel.epochs("epochs", leaky_fit, _evaluate, 3)
    data.subset("test_unseen")  # unsealed again afterwards
    with pytest.raises(RuntimeError, match="test_seen"):
        sel.grid("g", [1, 2], lambda view: (lambda c: float(data.subset("test_seen")[0].sum())))


def test_validation_view_holds_no_test_sample():
    data = make_synthetic(seed=0)
    view = data.validation_split()
    rows = data.splits["trainval"].sort().values
    assert view.features.shape[0] == rows.numel() < data.features.shape[0]
    assert torch.equal(view.features, data.features[rows])


def test_named_streams():
    ctx = RunContext(seed=3)
    a, b = ctx.rng("x"), ctx.rng("x")
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))  # each call restarts the stream
    assert not torch.equal(torch.rand(5, generator=ctx.rng("x")), torch.rand(5, generator=ctx.rng("y")))
    assert not torch.equal(torch.rand(5, generator=ctx.rng("x")), torch.rand(5, generator=RunContext(seed=4).rng("x")))
    # the streams that existed before the engine keep their seeds, so results did not move
    assert [stream_seed(3, n) for n in ("init", "batch_order", "synthesis", "episodes", "transductive", "noise")] == \
        [3, 3 * 1000003 + 1, 3 * 1000003 + 2, 3, 4, 3]
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    with ctx.init_scope():
        inside = torch.nn.Linear(4, 2).weight.detach().clone()
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is restored
    with ctx.init_scope():
        assert torch.equal(torch.nn.Linear(4, 2).weight, inside)  # the same initialisation every time


def test_balanced_batches_rows_and_classes():
    from zslfast.engine.samplers import BalancedBatches

    labels = torch.arange(40).repeat_interleave(5)  # AWA2's 40 seen classes, 5 images each
    g = torch.Generator().manual_seed(0)
    exact = BalancedBatches(labels, 64, g, steps=3)
    batches = list(exact.epoch())
    assert len(batches) == 3 and all(b.numel() == 64 for b in batches)
    for b in batches:  # ⌈64/40⌉ = 2 drawn per class, 80 cut back to 64: the 16 rows cut can empty at
        # most 8 classes, so at least 32 of the 40 appear, none more than twice
        counts = torch.bincount(labels[b], minlength=40)
        assert counts.max() <= 2 and (counts > 0).sum() >= 32
    original = BalancedBatches(labels, 64, g, steps=1, exact=False)
    assert original.sample().numel() == 40  # the original's 40 rows for a batch of 64
    many = torch.arange(200).repeat_interleave(3)  # S ≥ B: B distinct classes, one image each
    b = BalancedBatches(many, 64, g, steps=1).sample()
    assert b.numel() == 64 and torch.unique(many[b]).numel() == 64
