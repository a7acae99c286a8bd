import pytest
import torch

from zslfast.data import make_synthetic
from zslfast.eval import (continual_summary, harmonic_mean, per_class_accuracy, predict,
                          train_softmax_classifier, zsl_gzsl_metrics)
from zslfast.eval.metrics import seen_unseen_curve


def test_per_class_accuracy_by_hand():
    target = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2])
    # class 0: 3/4, class 1: 1/1, class 2: 1/2 -> mean 0.75
    assert abs(per_class_accuracy(pred, target) - 0.75) < 1e-12
    assert per_class_accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)) == 0.0


def test_harmonic_mean():
    assert abs(harmonic_mean(0.5, 0.25) - 1 / 3) < 1e-12
    assert harmonic_mean(0.0, 0.9) == 0.0


def test_predict_restriction_and_calibration():
    scores = torch.tensor([[5.0, 4.0, 1.0], [3.0, 0.0, 2.9]])
    assert predict(scores).tolist() == [0, 0]
    assert predict(scores, classes=torch.tensor([1, 2])).tolist() == [1, 2]
    # calibrated stacking: seen class 0 loses 0.5
    assert predict(scores, seen_classes=torch.tensor([0]), calibration=0.5).tolist() == [0, 2]


def test_zsl_gzsl_metrics_on_a_perfect_and_a_seen_biased_scorer():
    data = make_synthetic(seed=0)
    eye = torch.eye(data.num_classes)
    oracle_scores = {}
    for k in ("test_seen", "test_unseen"):
        x, y = data.subset(k)
        oracle_scores[x.data_ptr()] = eye[y]
    # A scorer that knows the labels: every metric is 100.
    lookup = {}
    for k in ("test_seen", "test_unseen"):
        x, y = data.subset(k)
        for row, label in zip(x, y):
            lookup[row.numpy().tobytes()] = int(label)

    def oracle(x):
        return eye[[lookup[r.numpy().tobytes()] for r in x]]

    m = zsl_gzsl_metrics(oracle, data)
    assert m == {"zsl_t1": 100.0, "gzsl_s": 100.0, "gzsl_u": 100.0, "gzsl_h": 100.0}

    # Same oracle plus a large bonus for seen class 0 in GZSL: U = 0, so H = 0; ZSL T1 unaffected.
    def biased(x):
        s = oracle(x)
        s[:, int(data.seen_classes[0])] += 10
        return s

    m = zsl_gzsl_metrics(biased, data)
    assert m["zsl_t1"] == 100.0 and m["gzsl_u"] == 0.0 and m["gzsl_h"] == 0.0
    assert abs(m["gzsl_s"] - 100.0 / len(data.seen_classes)) < 1e-9  # only class 0 right
    # Calibrated stacking subtracts 20 from every seen score: a seen sample's true class scores 1 − 20
    # (class 0: 10 − 20), below every unseen class's 0, so S = 0; an unseen sample's class scores 1,
    # above every seen class, so U = 100 and H = 0. ZSL T1 ignores calibration.
    m = zsl_gzsl_metrics(biased, data, calibration=20.0)
    assert m == {"zsl_t1": 100.0, "gzsl_s": 0.0, "gzsl_u": 100.0, "gzsl_h": 0.0}


def test_continual_summary_is_mean_of_per_task_h():
    tasks = [{"S": 80.0, "U": 20.0, "H": harmonic_mean(80.0, 20.0)}, {"S": 60.0, "U": 40.0, "H": 48.0}]
    s = continual_summary(tasks)
    assert s["mSA"] == 70.0 and s["mUA"] == 30.0
    assert abs(s["mH"] - (32.0 + 48.0) / 2) < 1e-9 and s["mH"] != harmonic_mean(70.0, 30.0)


def test_softmax_classifier_learns_and_selects_best_epoch():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 3
    y = torch.arange(5).repeat(40)
    x = centers[y] + torch.randn(200, 16, generator=g)
    snapshots = []

    def select(clf):
        snapshots.append({k: v.clone() for k, v in clf.state_dict().items()})
        return -abs(len(snapshots) - 3)  # pretend the 3rd epoch is best

    clf, info = train_softmax_classifier(x, y, 5, epochs=6, lr=1e-2, batch_size=32, select_fn=select, generator=g)
    choice = info["classifier_epochs"]
    assert choice["value"] == 3 and [e for e, _ in choice["history"]] == [1, 2, 3, 4, 5, 6]
    # the returned classifier holds the 3rd epoch's weights, not the last epoch's
    for k, v in clf.state_dict().items():
        assert torch.equal(v, snapshots[2][k]) and not torch.equal(v, snapshots[-1][k])
    clf2, _ = train_softmax_classifier(x, y, 5, epochs=10, lr=1e-2, batch_size=32, generator=g)
    assert per_class_accuracy(clf2(x).argmax(1), y) > 0.9


def test_seen_unseen_curve_hand_worked():
    # seen classes 0, 1; unseen class 2. d = best seen score - best unseen score:
    # A (label 0): d = 3 - 2 = 1, seen-correct; B (label 1): d = 2 - 2.5 = -0.5, seen-correct;
    # C (label 2): d = 1.5 - 0.5 = 1 (a tie with A); D (label 2): d = 0 - 1 = -1 (both unseen-correct).
    # Reachable (S, U) as γ rises: (1, 0) -> γ=-1: (1, .5) -> γ=-.5: (.5, .5) -> γ=1: (0, 1) (A and C
    # change together); trapezoids: 0 + .5*.5 + .5*(.5+1)/2 = .625. At γ = 0: S = .5 (A), U = .5 (D).
    seen_scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 2.0, 2.5]])
    unseen_scores = torch.tensor([[1.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    c = seen_unseen_curve(seen_scores, torch.tensor([0, 1]), unseen_scores, torch.tensor([2, 2]),
                          torch.tensor([0, 1]), torch.tensor([2]))
    assert c["ausuc"] == pytest.approx(62.5)
    assert c["S"] == pytest.approx([100, 100, 50, 0]) and c["U"] == pytest.approx([0, 50, 50, 100])
    assert c["gamma"] == [None, -1.0, -0.5, 1.0]
    assert c["at_run"] == pytest.approx({"S": 50.0, "U": 50.0, "H": 50.0})


def test_seen_unseen_curve_is_calibrated_stacking_at_every_threshold():
    # Random scores, unequal class sizes: every curve point is the per-class S and U of calibrated
    # stacking's argmax at its γ (computed here by the plain rule), and the area agrees with a dense
    # sampled sweep of γ.
    g = torch.Generator().manual_seed(0)
    k, seen, unseen = 7, torch.tensor([0, 2, 3, 5]), torch.tensor([1, 4, 6])
    ys = seen[torch.randint(0, 4, (60,), generator=g)]
    yu = unseen[torch.randint(0, 3, (45,), generator=g)]
    xs, xu = torch.randn(60, k, generator=g).double(), torch.randn(45, k, generator=g).double()
    xs[torch.arange(60), ys] += 1.0
    xu[torch.arange(45), yu] += 1.0
    c = seen_unseen_curve(xs, ys, xu, yu, seen, unseen, max_points=10**6)

    def s_u(gamma):
        return (100 * per_class_accuracy(predict(xs, None, seen, gamma), ys),
                100 * per_class_accuracy(predict(xu, None, seen, gamma), yu))

    for gamma, s, u in zip(c["gamma"][1:], c["S"][1:], c["U"][1:]):
        assert s_u(gamma + 1e-9) == pytest.approx((s, u), abs=1e-9)
    assert s_u(-1e9) == pytest.approx((c["S"][0], 0.0), abs=1e-9)
    assert c["S"][-1] == 0.0 and c["U"][0] == 0.0
    grid = torch.linspace(-8, 8, 6001).double()
    pts = [s_u(float(t)) for t in grid]
    sampled = sum((a[0] - b[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:])) / 100
    assert c["ausuc"] == pytest.approx(sampled, abs=0.05)
    assert (c["at_run"]["S"], c["at_run"]["U"]) == pytest.approx(s_u(0.0), abs=1e-9)
    thin = seen_unseen_curve(xs, ys, xu, yu, seen, unseen, max_points=5)
    assert len(thin["S"]) == 5 and thin["S"][0] == c["S"][0] and thin["U"][-1] == c["U"][-1]
    assert thin["ausuc"] == c["ausuc"]
