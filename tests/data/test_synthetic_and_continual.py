import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

from zslfast.data import ContinualSplit, ReplayBuffer, load_xlsa17, make_synthetic, read_att_splits, \
    read_xlsa17_folder
from zslfast.data.synthetic import main as synthetic_main
from zslfast.errors import ZSLError

from .conftest import real_att_splits


def test_default_is_deterministic_and_resnet_like():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.features, c.features)
    assert (a.features >= 0).all() and 0.2 < float((a.features == 0).float().mean()) < 0.8  # sparse, non-negative
    assert len(a.unseen_classes) == 10 and len(a.seen_classes) == 40


@pytest.mark.parametrize("name", ["CUB", "SUN"])
def test_like_uses_real_attributes_and_split_sizes(name):
    meta = read_att_splits(real_att_splits(name))
    ds = make_synthetic(like=name, feature_dim=32)
    assert torch.equal(ds.attributes, meta["attributes"])
    for k in ("trainval", "test_seen", "test_unseen"):
        assert ds.splits[k].numel() == meta["splits"][k].numel()


def test_cli_writes_readable_xlsa17(tmp_path, capsys):
    real_att_splits("APY")
    assert synthetic_main(["--like", "APY", "--out", str(tmp_path), "--feature-dim", "16"]) == 0
    ds = load_xlsa17(str(tmp_path), "APY")
    ref = make_synthetic(like="APY", feature_dim=16)
    assert torch.equal(ds.features, ref.features) and torch.equal(ds.labels, ref.labels)
    assert synthetic_main(["--out", str(tmp_path)]) == 0  # built-in default goes to synthetic_default/
    assert read_xlsa17_folder(str(tmp_path / "synthetic_default")).features.shape == (3000, 512)
    assert synthetic_main(["--like", "NOPE", "--out", str(tmp_path)]) == 2


def test_continual_split_follows_the_protocol():
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 50, 2000))
    cs = ContinualSplit(labels, num_classes=50, classes_per_task=10, num_tasks=5)
    # the same images as scikit-learn's split of the feature matrix with random_state=42
    feats = np.random.default_rng(1).random((2000, 3))
    _, test_feats = train_test_split(feats, test_size=0.2, random_state=42)
    assert np.allclose(feats[cs.test_idx.numpy()], test_feats)
    assert list(cs.trained_tasks) == [1, 2, 3, 4]
    for t in cs.trained_tasks:
        task = cs.task(t)
        assert task.seen_classes.tolist() == list(range(10 * t))
        assert task.unseen_classes.tolist() == list(range(10 * t, 50))
        assert set(labels[task.train].tolist()) <= set(range(10 * (t - 1), 10 * t))  # only new classes
        assert torch.isin(task.train, cs.train_idx).all()
        both = torch.cat([task.test_seen, task.test_unseen]).sort().values
        assert torch.equal(both, cs.test_idx.sort().values)
    with pytest.raises(ZSLError, match="task must be in 1..4"):
        cs.task(5)


def test_replay_buffer_quota_and_order():
    labels = torch.arange(40).repeat_interleave(30)  # 40 classes × 30 samples, in class order
    cs = ContinualSplit(labels, num_classes=40, classes_per_task=10, num_tasks=4)
    buf = ReplayBuffer(size=100)
    t1 = cs.task(1)
    buf.update(t1, labels)
    counts = torch.bincount(labels[buf.indices], minlength=40)
    assert counts[:10].tolist() == [10] * 10 and counts[10:].sum() == 0  # quota 100 // 10
    # the first 10 train samples of each class, in split order
    first = [t1.train[labels[t1.train] == c][:10] for c in range(10)]
    assert set(buf.indices.tolist()) == set(torch.cat(first).tolist())
    t2 = cs.task(2)
    buf.update(t2, labels)
    counts = torch.bincount(labels[buf.indices], minlength=40)
    assert counts[:20].tolist() == [5] * 20 and buf.indices.numel() <= 100
    kept_old = buf.indices[labels[buf.indices] < 10]
    assert set(kept_old.tolist()) == set(torch.cat([f[:5] for f in first]).tolist())  # first 5 of the old 10
