import os
import shutil

import numpy as np
import pytest
import scipy.io
import torch

from zslfast.data import load_epgn, load_xlsa17, read_att_splits
from zslfast.errors import ZSLError

from .conftest import REAL, labels_for_splits, real_att_splits, write_res101

# Sizes of the proposed splits (Xian et al.), an independent expectation for the real files.
EXPECTED = {"CUB": (200, 312, 7057, 1764, 2967), "AWA2": (50, 85, 23527, 5882, 7913),
            "SUN": (717, 102, 10320, 2580, 1440), "APY": (32, 64, 5932, 1483, 7924),
            "AWA1": (50, 85, 19832, 4958, 5685), "FLO": (102, 1024, 5631, 1403, 1155)}
UNSEEN = {"AWA1": 10, "AWA2": 10, "CUB": 50, "SUN": 72, "APY": 12, "FLO": 20}


@pytest.mark.parametrize("name", REAL)
def test_real_att_splits(name):
    meta = read_att_splits(real_att_splits(name))
    c, d, n_tv, n_ts, n_tu = EXPECTED[name]
    assert meta["attributes"].shape == (c, d) and meta["attributes"].dtype == torch.float32
    assert len(meta["class_names"]) == c
    sp = meta["splits"]
    assert (sp["trainval"].numel(), sp["test_seen"].numel(), sp["test_unseen"].numel()) == (n_tv, n_ts, n_tu)
    for v in sp.values():
        assert v.dtype == torch.int64 and int(v.min()) >= 0  # uint16 cast before the -1
    # trainval, test_seen, test_unseen partition all N samples exactly
    allidx = torch.cat([sp["trainval"], sp["test_seen"], sp["test_unseen"]]).sort().values
    assert torch.equal(allidx, torch.arange(n_tv + n_ts + n_tu))
    assert ("train" in sp) == (name in ("AWA1", "AWA2", "SUN", "FLO"))  # the staged CUB/APY lack them
    if name in ("AWA1", "AWA2"):
        assert float(meta["attributes"].min()) < 0  # the tiny negative values are kept as they are
    if name == "FLO":
        assert meta["class_names"][0] == "class_000"  # no allclasses_names in FLO's file
    if name == "CUB":
        assert meta["class_names"][0] == "002.Laysan_Albatross"


@pytest.mark.parametrize("name", REAL)
def test_load_real_att_splits_with_generated_features(name, tmp_path):
    path = real_att_splits(name)
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(path, folder / "att_splits.mat")
    mat = scipy.io.loadmat(path)
    labels = labels_for_splits(mat, UNSEEN[name], np.random.default_rng(1))
    write_res101(str(folder), labels)
    ds = load_xlsa17(str(tmp_path), name.lower())
    c = EXPECTED[name][0]
    assert ds.features.shape == (labels.size, 8) and ds.features.dtype == torch.float32
    assert torch.equal(ds.labels, torch.from_numpy(labels - 1))
    assert len(ds.unseen_classes) == UNSEEN[name] and len(ds.seen_classes) == c - UNSEEN[name]
    v = ds.validation_split()
    # the view holds exactly the trainval rows (never a test sample), each used by one of its splits
    rows = ds.splits["trainval"].sort().values
    assert torch.equal(v.features, ds.features[rows]) and torch.equal(v.labels, ds.labels[rows])
    used = torch.cat([v.splits["trainval"], v.splits["test_seen"], v.splits["test_unseen"]])
    assert torch.equal(used.sort().values, torch.arange(rows.numel()))
    assert not torch.isin(v.unseen_classes, v.seen_classes).any()  # class-disjoint
    if "val" in ds.splits:  # the official val classes (as far as they are seen) are the validation-unseen ones
        official = torch.unique(ds.labels[ds.splits["val"]])
        assert set(v.unseen_classes.tolist()) <= set(official.tolist())


def test_cub_sentence_embeddings(tmp_path):
    path = real_att_splits("CUB")
    folder = tmp_path / "CUB"
    folder.mkdir()
    shutil.copy(path, folder / "att_splits.mat")
    shutil.copy(os.path.join(os.path.dirname(path), "sent_splits.mat"), folder / "sent_splits.mat")
    write_res101(str(folder), labels_for_splits(scipy.io.loadmat(path), 50, np.random.default_rng(2)))
    ds = load_xlsa17(str(tmp_path), "CUB", attributes="sent")
    assert ds.attributes.shape == (200, 1024)
    assert ds.splits["train"].numel() == 5875 and ds.splits["val"].numel() == 2946  # from sent_splits.mat


# ---------------------------------------------------------------------------------------- bad input
def _small_dataset(tmp_path, name="APY"):
    """A tiny xlsa17 folder: 6 classes (2 unseen), 30 samples."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    labels = np.repeat(np.arange(1, 7), 5)
    tv = np.array([i for i in range(30) if labels[i] <= 4 and i % 5 < 3]) + 1
    ts = np.array([i for i in range(30) if labels[i] <= 4 and i % 5 >= 3]) + 1
    tu = np.array([i for i in range(30) if labels[i] > 4]) + 1
    att = {"att": np.random.default_rng(0).random((7, 6)), "trainval_loc": tv.astype(np.uint16)[:, None],
           "test_seen_loc": ts.astype(np.uint16)[:, None], "test_unseen_loc": tu.astype(np.uint16)[:, None]}
    scipy.io.savemat(folder / "att_splits.mat", att)
    write_res101(str(folder), labels)
    return folder, att, labels


def test_small_dataset_loads(tmp_path):
    _small_dataset(tmp_path)
    ds = load_xlsa17(str(tmp_path), "APY")
    assert ds.seen_classes.tolist() == [0, 1, 2, 3] and ds.unseen_classes.tolist() == [4, 5]


@pytest.mark.parametrize("case,match", [
    ("unknown_name", "unknown dataset 'MNIST'"),
    ("missing_folder", "dataset folder not found"),
    ("missing_res101", "res101.mat: file not found"),
    ("missing_field", "att_splits.mat: missing field 'test_seen_loc'"),
    ("missing_labels", "res101.mat: missing field 'labels'"),
    ("wrong_shape", "'features' has shape"),
    ("nan", "features contain 1 NaN/inf values"),
    ("label_range", "labels must be 1-based class ids in \\[1, 6\\]"),
    ("overlap", "splits 'trainval' and 'test_seen' overlap in 1 samples"),
    ("loc_range", "split locations go up to 31"),
    ("loc_zero", "must hold 1-based sample locations"),
    ("corrupt", "cannot read as a MATLAB .mat file"),
])
def test_bad_input(tmp_path, case, match):
    folder, att, labels = _small_dataset(tmp_path)
    name = "APY"
    if case == "unknown_name":
        name = "MNIST"
    elif case == "missing_folder":
        shutil.rmtree(folder)
    elif case == "missing_res101":
        os.remove(folder / "res101.mat")
    elif case == "missing_field":
        del att["test_seen_loc"]
        scipy.io.savemat(folder / "att_splits.mat", att)
    elif case == "missing_labels":
        scipy.io.savemat(folder / "res101.mat", {"features": np.zeros((8, 30))})
    elif case == "wrong_shape":
        write_res101(str(folder), labels, features=np.zeros((8, 29)))
    elif case == "nan":
        f = np.zeros((8, 30), dtype=np.float32)
        f[3, 7] = np.nan
        write_res101(str(folder), labels, features=f)
    elif case == "label_range":
        bad = labels.copy()
        bad[0] = 7
        write_res101(str(folder), bad)
    elif case == "overlap":
        att["test_seen_loc"] = np.vstack([att["test_seen_loc"], att["trainval_loc"][:1]])
        scipy.io.savemat(folder / "att_splits.mat", att)
    elif case == "loc_range":
        att["test_unseen_loc"] = np.vstack([att["test_unseen_loc"], [[31]]]).astype(np.uint16)
        scipy.io.savemat(folder / "att_splits.mat", att)
    elif case == "loc_zero":
        att["test_unseen_loc"] = np.vstack([att["test_unseen_loc"], [[0]]]).astype(np.uint16)
        scipy.io.savemat(folder / "att_splits.mat", att)
    elif case == "corrupt":
        (folder / "att_splits.mat").write_bytes(b"not a mat file")
    with pytest.raises(ZSLError, match=match) as info:
        load_xlsa17(str(tmp_path), name)
    if case not in ("unknown_name",):
        assert str(tmp_path) in str(info.value)  # the message names the file


# ---------------------------------------------------------------------------------------- EPGN layout
def _write_epgn(folder, test_seen_idex=None):
    rng = np.random.default_rng(0)
    s, u = 4, 2
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "data.mat", {
        "train_fea": rng.random((12, 6)), "test_seen_fea": rng.random((4, 6)), "test_unseen_fea": rng.random((5, 6)),
        "seen_pro": rng.random((s, 3)), "unseen_pro": rng.random((u, 3)), "att_train": rng.random((12, 3))})
    scipy.io.savemat(folder / "label.mat", {
        "train_idx": (np.arange(12) % s + 1)[:, None],
        "test_seen_idex": (np.array([1, 2, 3, 4]) if test_seen_idex is None else test_seen_idex)[:, None],
        "test_unseen_idex": np.array([7, 9, 7, 9, 9])[:, None]})  # global ids, mapped to unseen rows 0/1


def test_epgn_layout(tmp_path):
    _write_epgn(tmp_path / "CUB")
    ds = load_epgn(str(tmp_path), "CUB")
    assert ds.features.shape == (21, 6) and ds.attributes.shape == (6, 3)
    assert ds.labels[:12].tolist() == [i % 4 for i in range(12)]
    assert ds.labels[16:].tolist() == [4, 5, 4, 5, 5]  # seen classes first, then unseen
    assert ds.seen_classes.tolist() == [0, 1, 2, 3] and ds.unseen_classes.tolist() == [4, 5]


def test_epgn_test_seen_outside_training_labels(tmp_path):
    _write_epgn(tmp_path / "CUB", test_seen_idex=np.array([1, 2, 3, 5]))
    with pytest.raises(ZSLError, match="test_seen_idex' must index the 4 rows of seen_pro"):
        load_epgn(str(tmp_path), "CUB")
