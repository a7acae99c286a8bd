"""The user's own datasets: any --dataset folder name, the packaged --like tables, the synthetic
writers' folder names, `python -m zslfast.data check`, and att_splits.mat from a class description."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tests.data.conftest import REAL, SHARED_DATA, real_att_splits
from zslfast.config import resolve_config
from zslfast.data import describe, make_synthetic, read_att_splits, synthetic
from zslfast.data.__main__ import main as data_main
from zslfast.data.check import check_folder
from zslfast.data.synthetic import main as synthetic_main
from zslfast.errors import ZSLError
from zslfast.train import main as train_main


@pytest.mark.parametrize("name", REAL)
def test_packaged_like_tables_equal_the_att_splits_files(name):
    path = real_att_splits(name)
    packaged = os.path.join(synthetic.PACKAGED_LIKE, f"{name}.npz")
    a, b = synthetic.read_like_table(path), synthetic.read_like_table(packaged)
    assert torch.equal(a["attributes"], b["attributes"]) and a["class_names"] == b["class_names"]
    assert a["split_sizes"] == b["split_sizes"]
    w2v = os.path.join(SHARED_DATA, name, "w2v_att.npy")
    if os.path.isfile(w2v):
        assert np.array_equal(np.load(w2v), np.load(os.path.join(synthetic.PACKAGED_LIKE, f"{name}_w2v_att.npy")))


def test_like_works_without_the_shared_data(monkeypatch, tmp_path):
    real_att_splits("APY")
    with_shared = make_synthetic(like="APY", feature_dim=8)
    monkeypatch.setattr(synthetic, "DEFAULT_SHARED_DATA", str(tmp_path / "nowhere"))
    monkeypatch.delenv("ZSLFAST_SHARED_DATA", raising=False)
    assert synthetic.find_att_splits("APY")[0].endswith(os.path.join("like", "APY.npz"))
    packaged = make_synthetic(like="APY", feature_dim=8)  # what an installed package sees
    assert torch.equal(with_shared.features, packaged.features) and torch.equal(with_shared.labels, packaged.labels)
    assert torch.equal(with_shared.attributes, packaged.attributes)


def test_writer_folder_names_are_loadable_dataset_names(tmp_path, capsys):
    assert synthetic_main(["--out", str(tmp_path), "--feature-dim", "8"]) == 0
    assert "--dataset synthetic_default" in capsys.readouterr().out
    own = tmp_path / "src" / "MyZoo"
    own.mkdir(parents=True)
    shutil.copyfile(real_att_splits("APY"), own / "att_splits.mat")
    assert synthetic_main(["--like", str(own / "att_splits.mat"), "--out", str(tmp_path), "--feature-dim", "8"]) == 0
    assert (tmp_path / "synthetic_like_MyZoo" / "res101.mat").is_file()
    assert synthetic_main(["--out", str(tmp_path), "--feature-dim", "8", "--name", "zoo2"]) == 0
    assert (tmp_path / "zoo2" / "att_splits.mat").is_file()
    assert synthetic_main(["--out", str(tmp_path), "--name", "Synthetic"]) == 2
    assert "not 'synthetic'" in capsys.readouterr().err


def test_any_folder_name_trains_on_the_budget_that_follows_the_data(tmp_path):
    assert synthetic_main(["--out", str(tmp_path / "data"), "--name", "my_zoo"]) == 0
    out = tmp_path / "run"
    assert train_main(["--dataset", "my_zoo", "--data-root", str(tmp_path / "data"), "--quick", "--device", "cpu",
                       "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "my_zoo"
    # the built-in synthetic data written to disk and read back: the same numbers as generated
    builtin = tmp_path / "builtin"
    assert train_main(["--quick", "--device", "cpu", "--no-progress", "--out", str(builtin)]) == 0
    assert res["metrics"] == json.loads((builtin / "results.json").read_text())["metrics"]
    # an unknown name has no section of its own: the CPU budget, not a benchmark's settings, with
    # synthetic counts relative to the data's real ones (GSMFlow's paper default is 50 000 per class)
    assert resolve_config("gsmflow", "my_zoo") == resolve_config("gsmflow", "another_name")
    assert resolve_config("gsmflow", "my_zoo") != resolve_config("gsmflow", "CUB")
    for method in ("gsmflow", "tfvaegan", "clswgan", "scegg"):
        config = resolve_config(method, "my_zoo")
        assert config["synth_ratio"] is not None, method
        assert config["epochs"] < resolve_config(method, "CUB")["epochs"], method
    # names that are not folder names are refused by the parser
    with pytest.raises(SystemExit):
        train_main(["--dataset", "../etc"])


def test_data_check_prints_the_summary_and_refuses_bad_folders(tmp_path, capsys):
    data = make_synthetic(feature_dim=8)
    synthetic.write_xlsa17(data, str(tmp_path), "zoo")
    assert data_main(["check", str(tmp_path / "zoo")]) == 0
    out = capsys.readouterr().out
    assert "classes: 50 (40 seen, 10 unseen)" in out and "att (64-d)" in out
    counts = torch.bincount(data.labels[data.splits["test_unseen"]], minlength=50)[data.unseen_classes]
    assert (f"test_unseen {int(counts.sum())} samples over 10/10 classes, per class min {int(counts.min())} / "
            f"median {int(counts.median())} / max {int(counts.max())}") in out
    (tmp_path / "zoo" / "res101.mat").write_bytes(b"not a mat file")
    assert data_main(["check", str(tmp_path / "zoo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "res101.mat" in err[0]
    assert data_main(["check", str(tmp_path / "nothing")]) == 2


def test_data_check_reads_region_folders(tmp_path, capsys):
    pytest.importorskip("h5py")
    from zslfast.data import synthetic_regions

    assert synthetic_regions.main(["--out", str(tmp_path), "--channels", "16", "--grid", "3", "3"]) == 0
    text = check_folder(str(tmp_path / "synthetic_default"))
    assert "SC-EGG region features" in text and "classes: 50 (40 seen, 10 unseen)" in text


def _classes_csv(path, kinds, att):
    lines = ["class,split," + ",".join(f"a{j}" for j in range(att.shape[1]))]
    lines += [f"c{i},{k}," + ",".join(repr(float(v)) for v in row) for i, (k, row) in enumerate(zip(kinds, att))]
    path.write_text("\n".join(lines) + "\n")


def test_described_att_splits_follow_the_proposed_split_protocol(tmp_path):
    rng = np.random.default_rng(0)
    kinds = ["seen", "seen", "val", "unseen", "seen", "unseen"]
    att = rng.random((6, 3))
    _classes_csv(tmp_path / "classes.csv", kinds, att)
    labels = np.concatenate([np.full(n, c + 1) for c, n in enumerate([10, 5, 7, 4, 1, 3])])
    rng.shuffle(labels)
    path = describe.write_described_att_splits(str(tmp_path / "classes.csv"), labels, str(tmp_path / "own"), seed=3)
    meta = read_att_splits(path)  # as xlsa17: att L2-normalised per class, original_att the raw values
    assert np.allclose(meta["attributes"].numpy(), att / np.linalg.norm(att, axis=1, keepdims=True), atol=1e-6)
    assert np.allclose(read_att_splits(path, "original_att")["attributes"].numpy(), att, atol=1e-6)
    assert meta["class_names"] == [f"c{i}" for i in range(6)]
    s = {k: v.numpy() for k, v in meta["splits"].items()}
    y = labels - 1
    assert sorted(np.concatenate([s["trainval"], s["test_seen"], s["test_unseen"]]).tolist()) == list(range(labels.size))
    assert set(y[s["test_unseen"]]) == {3, 5} and not set(y[s["trainval"]]) & {3, 5}
    # per seen class round(20%) to test_seen, at least one when it has two images, none when it has one
    assert [int(np.sum(y[s["test_seen"]] == c)) for c in (0, 1, 2, 4)] == [2, 1, 1, 0]
    assert set(y[s["val"]]) == {2} and set(y[s["train"]]) == {0, 1, 4}
    assert np.array_equal(np.sort(np.concatenate([s["train"], s["val"]])), s["trainval"])
    for bad, message in [("class,split,a\nx,maybe,1\ny,unseen,2\n", "not one of"),
                         ("class,split,a\nx,seen,1\ny,seen,2\n", "one unseen class"),
                         ("class,split,a\nx,seen,abc\ny,unseen,2\n", "must be numbers")]:
        (tmp_path / "bad.csv").write_text(bad)
        with pytest.raises(ZSLError, match=message):
            describe.write_described_att_splits(str(tmp_path / "bad.csv"), np.array([1, 2]), str(tmp_path / "b"))
    with pytest.raises(ZSLError, match="no images"):
        describe.write_described_att_splits(str(tmp_path / "classes.csv"), np.array([1, 4]), str(tmp_path / "b"))
    assert not (tmp_path / "b" / "att_splits.mat").exists()


def test_a_matlab_v73_file_is_explained(tmp_path):
    """MATLAB's -v7.3 files are HDF5 (a 512-byte text header, then the HDF5 superblock), which
    scipy cannot read: the error says so and how to re-save, instead of scipy's 'unknown type'."""
    h5py = pytest.importorskip("h5py")
    from zslfast.data.xlsa17 import read_mat

    path = tmp_path / "res101.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["features"] = np.zeros((3, 4))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .")
    with pytest.raises(ZSLError, match=r"MATLAB v7\.3 \(HDF5\) \.mat file.*'-v7'"):
        read_mat(str(path), "features")


def test_a_small_own_dataset_gets_a_small_budget(tmp_path):
    # 640 images of 16 classes: the synthetic count per unseen class follows its 32 real images per
    # seen class (the CPU budget's ratio), not GSMFlow's paper count of 50 000
    data = make_synthetic(seed=1, num_classes=16, num_unseen=4, images_per_class=40)
    synthetic.write_xlsa17(data, str(tmp_path / "data"), name="small")
    out = tmp_path / "run"
    assert train_main(["--method", "gsmflow", "--quick", "--dataset", "small", "--data-root", str(tmp_path / "data"),
                       "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    real = data.splits["trainval"].numel() / data.seen_classes.numel()
    ratio = resolve_config("gsmflow", "small")["synth_ratio"]
    n = round(ratio * real)
    assert real == 32 and n < 1000
    assert res["info"]["synthetic"] == {"per_unseen_class": n, "real_per_seen_class": real, "ratio": round(n / real, 4)}
