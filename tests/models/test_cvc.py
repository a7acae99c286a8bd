import json

import pytest
import torch
import torch.nn.functional as F

from zslfast.engine.samplers import EpisodeSampler
from zslfast.models.cvc import CVCModel, generalized_cross_entropy, pseudo_labels
from zslfast.train import main


def test_generalized_cross_entropy_closed_form_and_limits():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    p = torch.softmax(logits, 1)[[0, 1], [0, 1]]
    for q in (0.5, 1.0):
        expected = ((1 - (p + 1e-8) ** q) / q).mean()
        torch.testing.assert_close(generalized_cross_entropy(logits, y, q), expected)
    # q = 1 is the mean absolute error 1 − p_y; q → 0 approaches the cross-entropy.
    torch.testing.assert_close(generalized_cross_entropy(logits, y, 1.0), (1 - p - 1e-8).mean())
    ce = F.cross_entropy(logits, y)
    assert abs(float(generalized_cross_entropy(logits, y, 1e-6) - ce)) < 1e-4
    with pytest.raises(ValueError, match="loss_q"):
        generalized_cross_entropy(logits, y, 0.0)


def test_pseudo_labels_on_a_hand_made_score_matrix():
    scores = torch.tensor([
        [5.0, 1.0, 0.5],   # ratio 5 > 1.2: confident, class 0
        [2.0, 1.9, 0.1],   # ratio 1.05: not confident
        [0.2, 0.1, 3.0],   # ratio 15: confident, class 2
        [1.0, 2.0, 1.5],   # ratio 1.33: confident, class 1
        [-3.0, -2.6, -4.0],  # top-2 by value are -2.6, -3.0: |−2.6|/|−3.0| < 1.2, not confident
    ])
    pos, cls = pseudo_labels(scores, ratio=1.2, top_per_class=2)
    confident = list(zip(pos[:3].tolist(), cls[:3].tolist()))
    assert confident == [(0, 0), (2, 2), (3, 1)]
    # then the two best samples of each class, class by class in rank order
    per_class = sorted(zip(cls[3:].tolist(), pos[3:].tolist()))
    assert per_class == sorted([(0, 0), (0, 1), (1, 3), (1, 1), (2, 2), (2, 3)])


def test_episode_sampler_draws_distinct_classes_and_samples():
    labels = torch.tensor([3] * 5 + [7] * 2 + [1] * 9 + [4] * 3)[torch.randperm(19, generator=torch.Generator().manual_seed(1))]
    sampler = EpisodeSampler(labels, torch.Generator().manual_seed(0))
    seen_counts = torch.zeros(19)
    for _ in range(200):
        pos, cls = sampler.sample(ways=3, shots=2, episodes=4)
        assert pos.shape == (4, 3, 2) and cls.shape == (4, 3)
        for e in range(4):
            assert len(set(cls[e].tolist())) == 3  # distinct classes
            assert len(set(pos[e].reshape(-1).tolist())) == 6  # distinct samples
            assert (labels[pos[e]] == cls[e].unsqueeze(1)).all()  # each sample belongs to its class
        seen_counts += torch.bincount(pos.reshape(-1), minlength=19)
    assert (seen_counts > 0).all()  # every sample is reachable
    with pytest.raises(Exception, match="3 shots"):
        sampler.sample(ways=2, shots=3)
    with pytest.raises(Exception, match="5 ways"):
        sampler.sample(ways=5, shots=1)


def test_scoring_is_scaled_cosine_plus_bias():
    torch.manual_seed(0)
    model = CVCModel(6, 10, hidden=8)
    with torch.no_grad():
        model.scorer.bias.fill_(0.3)
    x, w = torch.randn(4, 10), torch.rand(3, 10)
    expected = 10.0 * (F.normalize(x, dim=1) @ F.normalize(w, dim=1).T + 0.3)
    torch.testing.assert_close(model.logits(x, w), expected, rtol=1e-5, atol=1e-5)


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["--method", "cvc", "--no-progress", "--device", "cpu", "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text()), out


def test_a_transductive_run_can_start_from_an_inductive_checkpoint(tmp_path, tmp_path_factory):
    """The generator of a checkpoint is the starting point: the new run's inductive metrics are the
    checkpointed run's, and it records where its inductive model came from."""
    from tests.quick_runs import quick_run

    first, _ = quick_run(tmp_path_factory, "cvc", "--set", "transductive=true")
    ckpt = first["checkpoint"]
    res, _ = _run(tmp_path, "t2", "--quick", "--set", "transductive=true", "--set", f"inductive_checkpoint={ckpt}")
    assert {k: v for k, v in res["metrics"].items() if k.startswith("inductive_")} == pytest.approx(
        {k: v for k, v in first["metrics"].items() if k.startswith("inductive_")}, abs=1e-9)
    assert res["selection"]["choices"]["inductive_checkpoint"]["value"] == ckpt
    assert res["selection"]["choices"]["transductive_epochs"] == {"value": res["config"]["transductive_training"]["epochs"],
                                                                   "score": None, "history": []}
    assert first["selection"]["on"] == "validation"
    assert {"inductive_epochs", "transductive_epochs"} <= set(first["selection"]["choices"])


def test_bad_checkpoint_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--method", "cvc", "--quick", "--no-progress", "--out", str(tmp_path / "o"),
                 "--set", "transductive=true", "--set", f"inductive_checkpoint={bad}"]) == 2
    assert "inductive_checkpoint" in capsys.readouterr().err


def test_batched_episodes_score_each_episode_against_its_own_classes():
    from zslfast.models.cvc import episode_logits

    torch.manual_seed(0)
    model = CVCModel(6, 10, hidden=8)
    e, n, w = 3, 4, 2
    x, weights = torch.randn(e * n, 10), torch.rand(e * w, 10)
    got = episode_logits(model, x, weights, e)
    for i in range(e):
        torch.testing.assert_close(got[i * n:(i + 1) * n], model.logits(x[i * n:(i + 1) * n], weights[i * w:(i + 1) * w]))


def test_select_on_test_evaluates_every_epoch_and_keeps_the_best(tmp_path):
    """The original evaluates on the test sets after every epoch and keeps the best-H epoch: with
    eval_every=3 the test history must still have one entry per epoch, the chosen epoch must be its
    (first) argmax and the reported H that epoch's."""
    res, _ = _run(tmp_path, "s", "--quick", "--select-on-test", "--set", "transductive=true", "--set", "hidden=128",
                  "--set", "epochs=4", "--set", "eval_every=3", "--set", "transductive_training.epochs=3",
                  "--set", "transductive_training.eval_every=3")
    sel, m = res["selection"], res["metrics"]
    assert sel["on"] == "test"
    for stage, epochs, key in (("inductive", 4, "inductive_gzsl_h"), ("transductive", 3, "gzsl_h")):
        choice = sel["choices"][f"{stage}_epochs"]
        assert [e for e, _ in choice["history"]] == list(range(1, epochs + 1))
        scores = [h for _, h in choice["history"]]
        assert choice["value"] == 1 + scores.index(max(scores))
        assert m[key] == pytest.approx(max(scores))


def test_checkpoint_reproduces_both_stages_and_training_beats_the_untrained_model(tmp_path_factory):
    """The inductive and the transductive states of a checkpoint give exactly the reported metrics;
    the untrained generator (same seed) has a far lower ZSL T1 and a higher episode loss on the
    training data, and the transductive stage raised unseen accuracy over its inductive start."""
    from tests.quick_runs import quick_run
    from zslfast.data import make_synthetic
    from zslfast.models.cvc import TransductiveState, evaluate

    res, ckpt = quick_run(tmp_path_factory, "cvc", "--set", "transductive=true")
    cfg, data, m = res["config"], make_synthetic(seed=0), res["metrics"]

    def new_model():
        return CVCModel(data.attribute_dim, data.feature_dim, cfg["hidden"], cfg["init_std"], cfg["scale_init"])

    model = new_model()
    model.load_state_dict(ckpt["state"]["inductive"])
    inductive = evaluate(model, data)
    assert {f"inductive_{k}": v for k, v in inductive.items()} == pytest.approx(
        {k: v for k, v in m.items() if k.startswith("inductive_")}, abs=1e-9)
    state = TransductiveState(new_model(), data.attributes)
    state.load_state_dict(ckpt["state"]["transductive"])
    assert evaluate(state, data) == pytest.approx({k: v for k, v in m.items() if not k.startswith("inductive_")},
                                                  abs=1e-9)
    torch.manual_seed(res["seed"])
    untrained = new_model()
    before = evaluate(untrained, data)
    assert inductive["zsl_t1"] > before["zsl_t1"] + 10, (inductive, before)  # about half the gain (25.3 vs 3.8)
    x, y = data.subset("trainval")
    seen = data.seen_classes
    with torch.no_grad():
        def loss(mdl):  # cross-entropy over the seen classes' generated classifiers
            return F.cross_entropy(mdl.logits(x, mdl(data.attributes[seen])), torch.searchsorted(seen, y))
        assert loss(model) < loss(untrained) - 0.1
    assert m["gzsl_u"] > m["inductive_gzsl_u"]
