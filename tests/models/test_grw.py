import math

import pytest
import torch
import torch.nn.functional as F

from zslfast.config import resolve_config
from zslfast.data import make_synthetic
from tests.oracles.grw_original import OriginalFormulation
from zslfast.engine import RunContext
from zslfast.models.grw import Formulation, GRWTrainer, attribute_neighbours, random_walk_loss
from zslfast.nn import class_means
from zslfast.train import main


@pytest.mark.parametrize("backend", ["ext", "torch"])
@pytest.mark.parametrize("target", ["diag", "uniform"])
def test_walk_loss_with_uniform_transitions_is_its_closed_form(backend, target, use_backend):
    # All centers equal and all points equal: every transition is uniform, so every T_t is the
    # uniform K×K matrix (ℓ_t = log K for both targets) and every point is visited alike (log M).
    use_backend(backend)
    k, m, steps, decay = 4, 9, 3, 0.7
    centers = torch.ones(k, 6, dtype=torch.float64)
    points = torch.full((m, 6), 2.0, dtype=torch.float64)
    loss = random_walk_loss(centers, points, steps, decay, target, visit_weight=0.5)
    expected = math.log(k) * sum(decay ** t for t in range(steps + 1)) + 0.5 * math.log(m)
    assert float(loss) == pytest.approx(expected, rel=1e-10)


def test_walk_loss_rejects_unknown_target():
    with pytest.raises(ValueError, match="target"):
        random_walk_loss(torch.rand(2, 3), torch.rand(4, 3), 1, 0.7, "diagonal")


def test_euclidean_loss_by_hand():
    # class 0: mean of (0,0) and (2,0) is (1,0), 3 away from μ_0 = (1,3); class 1 absent; K = 2.
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 0])
    mu = torch.tensor([[1.0, 3.0], [5.0, 5.0]])
    assert float(Formulation().euclidean_loss(x, y, mu)) == pytest.approx(1.5)


def test_correlation_loss_by_hand():
    # Class 0's generated mean (1,1) has cosine 1/√2 to both real means (1,0) and (0,1).
    # Neighbour 0 (itself, σ=1): lower bound 0.99 violated by 0.99 − 1/√2.
    # Neighbour 1 (σ=0.5): upper bound 0.51 violated by 1/√2 − 0.51. Class 1 is absent.
    x = torch.tensor([[1.0, 1.0]])
    y = torch.tensor([0])
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neighbours = torch.tensor([[0, 1], [1, 0]])
    sigma = torch.tensor([[1.0, 0.5], [1.0, 0.5]])
    c = 1 / math.sqrt(2)
    expected = 20 * ((0.99 - c) ** 2 + (c - 0.51) ** 2)
    for f in (Formulation(), OriginalFormulation()):
        got = f.correlation_loss(x, y, mu, neighbours, sigma, margin=0.01, lower=0.01, weight=20, reduction="sum")
        assert float(got) == pytest.approx(expected, rel=1e-6)
    mean = Formulation().correlation_loss(x, y, mu, neighbours, sigma, 0.01, 0.01, 1.0, "mean")
    assert float(mean) == pytest.approx(expected / 20 / 2, rel=1e-6)


def test_class_means_and_neighbours():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    means, counts = class_means(x, torch.tensor([2, 2, 0]), 3)
    torch.testing.assert_close(means, torch.tensor([[10.0, 0.0], [0.0, 0.0], [2.0, 3.0]]))
    assert counts.tolist() == [1, 0, 2]
    att = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    idx, val = attribute_neighbours(att, 2)
    assert idx[:, 0].tolist() == [0, 1, 2]  # each class is its own first neighbour (σ = 1)
    assert idx[0, 1] == 1 and idx[2, 1] == 1
    torch.testing.assert_close(val[:, 0], torch.ones(3))


@pytest.mark.parametrize("target", ["diag", "uniform"])
def test_walk_loss_equals_the_dense_original(target):
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(5, 16, generator=g, dtype=torch.float64, requires_grad=True)
    points = torch.rand(30, 16, generator=g, dtype=torch.float64, requires_grad=True)
    ours = random_walk_loss(centers, points, 4, 0.7, target, 1.0)
    theirs = OriginalFormulation().walk_loss(centers, points, 4, 0.7, target, 1.0, 1.0)
    torch.testing.assert_close(ours, theirs)
    g1 = torch.autograd.grad(ours, (centers, points))
    g2 = torch.autograd.grad(theirs, (centers, points))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def _trainer(formulation="zslfast", k=20, method="interpolation", schedule="one_step", dtype=torch.float32,
             extra=()):
    data = make_synthetic(seed=0)
    cfg = resolve_config("grw", "synthetic", overrides=[f"attribute_generation={method}", f"schedule={schedule}",
                                                         "hidden=64", *extra])
    f = {"zslfast": Formulation, "original": OriginalFormulation}[formulation]()
    tr = GRWTrainer(data, cfg, RunContext(), formulation=f)
    tr.model.to(dtype)
    tr.att, tr.mu = tr.att.to(dtype), tr.mu.to(dtype)
    x = data.features.to(dtype)
    idx = torch.nonzero(data.labels < k).squeeze(1)
    tr.start_task(k, torch.arange(k), x[idx], data.labels[idx])
    return tr, x[idx[::7][:64]], data.labels[idx[::7][:64]]


@pytest.mark.parametrize("method,schedule,extra", [
    ("interpolation", "one_step", ()),
    ("learnable", "one_step", ()),
    ("interpolation", "one_step", ("d_real_alignment=matched",)),
    ("interpolation", "two_step", ("g_prototypes=before_d_step", "log_eps=0")),  # the main branch
    ("learnable", "two_step", ("g_prototypes=before_d_step", "d_real_alignment=matched")),
])
def test_training_step_equals_the_original_formulation(method, schedule, extra):
    """Same seed, same batch: zslfast's step and the original formulation's give the same losses
    (D's included) and the same updated weights of D and G. The original formulation runs D on
    repeated rows (with D's pre-update weights for before_d_step), computes D's real alignment as
    the original's [B,1,D]-against-[B,D] broadcast, and uses dense walks and class loops.
    In float64: Adam's first steps move every weight by ±lr whatever the gradient's size, so float32
    rounding of near-zero gradients would flip some updates."""
    ours, x, y = _trainer("zslfast", method=method, schedule=schedule, dtype=torch.float64, extra=extra)
    theirs, _, _ = _trainer("original", method=method, schedule=schedule, dtype=torch.float64, extra=extra)
    for _ in range(2):
        a, b = ours.step(x, y), theirs.step(x, y)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-9)
    for (name, p), q in zip(ours.model.named_parameters(), theirs.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-7, atol=1e-9, msg=name)


def test_real_alignment_by_hand():
    # prototypes p0 = (1,0), p1 = (0,1); features x0 = (2,0), x1 = (1,1). Cosines: p0·x0 = 1,
    # p0·x1 = p1·x1 = 1/√2, p1·x0 = 0. All pairs: (1 + √2)/4; matched pairs (p0,x0), (p1,x1): (1 + 1/√2)/2.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    for f in (Formulation(), OriginalFormulation()):
        all_pairs = f.real_alignment(p, x, 10.0, 0.0, "all_pairs")
        matched = f.real_alignment(p, x, 10.0, 0.0, "matched")
        assert float(all_pairs) == pytest.approx(math.log(10 * (1 + math.sqrt(2)) / 4), rel=1e-12)
        assert float(matched) == pytest.approx(math.log(10 * (1 + 1 / math.sqrt(2)) / 2), rel=1e-12)


def test_d_loss_uses_the_configured_real_alignment():
    tr, x, y = _trainer(dtype=torch.float64)
    k = tr.num_seen
    with torch.no_grad():
        protos = tr.model.embedder(tr.att[:k])
    x_fake = torch.rand_like(x)
    losses = {}
    for mode in ("all_pairs", "matched"):
        tr.cfg["d_real_alignment"] = mode
        losses[mode] = float(tr.d_loss(x, y, x_fake, protos))
    f = Formulation()
    gap = float(f.real_alignment(protos[y], x, 10.0, tr.cfg["log_eps"], "matched")
                - f.real_alignment(protos[y], x, 10.0, tr.cfg["log_eps"], "all_pairs"))
    assert losses["all_pairs"] - losses["matched"] == pytest.approx(gap, rel=1e-9)
    assert abs(gap) > 1e-3  # the two settings really differ on a real batch


def test_seen_scores_equal_the_repeated_embedder():
    tr, x, _ = _trainer()
    att = tr.att[:20]
    protos = tr.model.embedder(att)
    torch.testing.assert_close(Formulation().seen_scores(tr.model.embedder, att, protos, x, 10.0),
                               OriginalFormulation().seen_scores(tr.model.embedder, att, protos, x, 10.0),
                               rtol=1e-4, atol=1e-4)


def test_learnable_dictionary_rows_stay_within_max_norm():
    tr, x, y = _trainer(method="learnable")
    max_norm = float(tr.att.norm(dim=1).max())
    assert tr.dictionary.max_norm == pytest.approx(max_norm)
    assert float(tr.dictionary.weight.detach().norm(dim=1).max()) <= max_norm * (1 + 1e-6)  # interpolations of rows
    before = tr.dictionary.weight.detach().clone()
    for _ in range(5):
        tr.step(x, y)
        rows = tr.hallucinate(y)  # a lookup renormalises the rows it returns
        assert float(rows.detach().norm(dim=1).max()) <= max_norm * (1 + 1e-5)
    assert not torch.equal(before, tr.dictionary.weight)  # the dictionary is trained


def test_interpolated_attributes_are_convex_mixtures_of_batch_classes():
    tr, _, _ = _trainer()
    c = tr.att.shape[0]
    tr.att = torch.eye(c)  # one-hot attributes make the mixing weights readable
    y = torch.arange(16)
    a = tr.hallucinate(y)
    torch.testing.assert_close(a.sum(1), torch.ones(16))
    top = a.max(1).values
    assert ((top >= 0.5 - 1e-6) & (top <= 0.8 + 1e-6) | (top > 1 - 1e-6)).all()
    assert (a[:, 16:] == 0).all()  # only classes of the batch are mixed


@pytest.mark.parametrize("schedule,steps", [("one_step", 1), ("two_step", 2)])
def test_schedules_take_one_or_two_generator_steps(schedule, steps):
    tr, x, y = _trainer(schedule=schedule)
    tr.step(x, y)
    state = tr.opt_g.state[next(tr.model.generator.parameters())]
    assert int(state["step"]) == steps
    assert int(tr.opt_d.state[next(tr.model.embedder.parameters())]["step"]) == 1


def test_continual_run_replays_its_buffer_and_reports_every_trained_task(monkeypatch):
    """Four trained tasks of 10 classes with a 120-sample buffer (quotas 12, 6, 4, 3 per class): the
    buffer holds only training images, exactly its quota of every class seen so far (each class
    keeping the first of its previously kept images), and is trained on with the next task, whose
    reported train_samples count it; per-task H and the means are those of the per-task values."""
    from zslfast.data import ContinualSplit, ReplayBuffer
    from zslfast.models import grw

    cfg = resolve_config("grw", "synthetic", quick=True, overrides=["num_tasks=5", "epochs=1", "hidden=64",
                                                                    "buffer_size=120"])
    data = make_synthetic(seed=0)
    split = ContinualSplit(data.labels, data.num_classes, 10, 5, **cfg["split"])
    buffers, trained_labels = [], []
    update, step, start = ReplayBuffer.update, grw.GRWTrainer.train_step, grw.GRWTrainer.start_task
    monkeypatch.setattr(ReplayBuffer, "update", lambda self, task, labels: buffers.append(
        update(self, task, labels).clone()) or buffers[-1])
    monkeypatch.setattr(grw.GRWTrainer, "start_task", lambda self, *a: trained_labels.append([]) or start(self, *a))
    monkeypatch.setattr(grw.GRWTrainer, "train_step", lambda self, x, y, *a: trained_labels[-1].append(y.clone())
                        or step(self, x, y, *a))
    result = grw.GRW().run(data, cfg, RunContext(device=torch.device("cpu"), progress=False))

    tasks = result.per_task
    assert [t["task"] for t in tasks] == [1, 2, 3, 4]  # T−1 tasks, the last one is never trained
    assert [t["seen_classes"] for t in tasks] == [10, 20, 30, 40]
    train, test = set(split.train_idx.tolist()), set(split.test_idx.tolist())
    for t, buf in enumerate(buffers, start=1):
        quota = 120 // (10 * t)
        assert set(buf.tolist()) <= train and not set(buf.tolist()) & test
        counts = torch.bincount(data.labels[buf], minlength=data.num_classes)
        assert counts[:10 * t].tolist() == [quota] * (10 * t) and counts[10 * t:].sum() == 0
        if t > 1:  # old classes keep a prefix of what they had
            for c in range(10 * (t - 1)):
                old = buffers[t - 2][data.labels[buffers[t - 2]] == c]
                assert torch.equal(buf[data.labels[buf] == c], old[:quota])
    for t in range(1, 4):  # task t+1 trains on its new classes plus the buffer left by task t
        new = split.task(t + 1).train
        assert tasks[t]["train_samples"] == new.numel() + buffers[t - 1].numel()
        seen_labels = torch.cat(trained_labels[t])
        counts = torch.bincount(seen_labels, minlength=data.num_classes)
        replayed = counts[:10 * t]
        quota = 120 // (10 * t)
        # one epoch: every buffered image once (a last batch of one sample is skipped, as the original)
        assert ((replayed == quota) | (replayed == quota - 1)).all() and replayed.sum() >= 10 * t * quota - 1
    assert tasks[0]["train_samples"] == split.task(1).train.numel()
    for t in tasks:
        assert t["H"] == pytest.approx(0 if t["S"] == 0 or t["U"] == 0 else 2 * t["S"] * t["U"] / (t["S"] + t["U"]))
    m = result.metrics
    assert m["mH"] == pytest.approx(sum(t["H"] for t in tasks) / 4)
    assert m["mSA"] == pytest.approx(sum(t["S"] for t in tasks) / 4)
    assert m["mUA"] == pytest.approx(sum(t["U"] for t in tasks) / 4)


def _task_accuracy(embedder, data, task):
    """S and U (percent) of nearest-prototype-by-cosine prediction over all classes, written out."""
    with torch.no_grad():
        protos = F.normalize(embedder(data.attributes), dim=1)
        out = []
        for idx in (task.test_seen, task.test_unseen):
            pred = (F.normalize(data.features[idx], dim=1) @ protos.T).argmax(1)
            y = data.labels[idx]
            out.append(100 * torch.stack([(pred[y == c] == c).double().mean() for c in y.unique()]).mean().item())
    return out


def test_checkpoint_reproduces_the_last_task_and_beats_the_untrained_model(tmp_path_factory):
    """The saved model gives the last task's S and U again; the untrained model (same seed) scored
    on every task has a much lower mUA and mSA, so the unseen accuracy comes from training."""
    from tests.quick_runs import quick_run
    from zslfast.data import ContinualSplit
    from zslfast.engine.continual import task_setting
    from zslfast.models.grw import GRWModel

    res, ckpt = quick_run(tmp_path_factory, "grw")
    cfg, data = res["config"], make_synthetic(seed=0)
    s, t = task_setting(data, cfg)
    split = ContinualSplit(data.labels, data.num_classes, s, t, **cfg["split"])
    model = GRWModel(data.attribute_dim, data.feature_dim, cfg["hidden"])
    model.load_state_dict(ckpt["state"]["model"])
    last = res["per_task"][-1]
    su = _task_accuracy(model.embedder, data, split.task(last["task"]))
    assert su == pytest.approx([last["S"], last["U"]], abs=1e-9)
    torch.manual_seed(res["seed"])
    untrained = GRWModel(data.attribute_dim, data.feature_dim, cfg["hidden"])
    u0 = [_task_accuracy(untrained.embedder, data, split.task(k["task"])) for k in res["per_task"]]
    msa0, mua0 = (sum(v[i] for v in u0) / len(u0) for i in (0, 1))
    # margins about half of the quick run's gains (mUA 8.1 vs 1.7, mSA 61.5 vs 3.9 untrained)
    assert res["metrics"]["mUA"] > mua0 + 3 and res["metrics"]["mSA"] > msa0 + 30, (res["metrics"], msa0, mua0)


def test_continual_run_rejects_bad_settings(tmp_path, capsys):
    assert main(["--method", "grw", "--quick", "--no-progress", "--out", str(tmp_path / "a"),
                 "--set", "attribute_generation=random"]) == 2
    assert "attribute_generation" in capsys.readouterr().err
    assert main(["--method", "grw", "--quick", "--no-progress", "--out", str(tmp_path / "b"),
                 "--select-on-test"]) == 2
    assert "select-on-test" in capsys.readouterr().err
