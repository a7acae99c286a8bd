"""Features from the user's own files (``--features FILE`` / ``--labels FILE`` for training, the
same reader for ``zslfast.predict``): every format gives exactly the dataset that the xlsa17
``res101.mat`` of the same samples gives, and every way of getting it wrong is one clear line."""
import json

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from zslfast.data import make_synthetic
from zslfast.data.arrays import read_arrays, read_labels
from zslfast.data.synthetic import write_xlsa17
from zslfast.data.xlsa17 import read_xlsa17_folder
from zslfast.errors import ZSLError
from zslfast.train import main as train_main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    data = make_synthetic(seed=3, num_classes=12, num_unseen=3, feature_dim=16, images_per_class=10)
    write_xlsa17(data, str(root), name="mine")
    return root / "mine", data


def _save(kind, path, x, y):
    """x [N, D] float, y 0-based labels, in one file of the given kind (labels inside where it can)."""
    if kind == "npz":
        np.savez(path, features=x, labels=y)
    elif kind == "pt":
        torch.save({"features": torch.from_numpy(x), "labels": torch.from_numpy(y)}, path)
    elif kind == "h5":
        with h5py.File(path, "w") as f:
            f["features"], f["labels"] = x, y
    elif kind == "mat":  # xlsa17's layout: D × N, 1-based labels
        scipy.io.savemat(path, {"features": x.T.astype(np.float64), "labels": (y + 1)[:, None].astype(np.float64)})


@pytest.mark.parametrize("kind", ["npz", "pt", "h5", "mat"])
def test_every_format_gives_the_res101_dataset(folder, tmp_path, kind):
    path, data = folder
    want = read_xlsa17_folder(str(path))
    assert torch.equal(want.features, data.features) and torch.equal(want.labels, data.labels)
    x, y = data.features.numpy() + 1.0, data.labels.numpy()
    f = tmp_path / f"feats.{kind}"
    _save(kind, f, x, y)
    got = read_xlsa17_folder(str(path), features_file=str(f))
    assert torch.equal(got.features, want.features + 1.0) and torch.equal(got.labels, want.labels)
    assert got.source == str(f)
    # the file's own labels win over res101.mat's: two seen classes swapped
    a, b = (int(c) for c in data.seen_classes[:2])
    swapped = np.where(y == a, b, np.where(y == b, a, y))
    _save(kind, f, x, swapped)
    assert torch.equal(read_xlsa17_folder(str(path), features_file=str(f)).labels, torch.from_numpy(swapped))


def test_npy_features_take_labels_from_labels_file_or_res101(folder, tmp_path):
    path, data = folder
    x = data.features.numpy() * 2
    np.save(tmp_path / "x.npy", x)
    got = read_xlsa17_folder(str(path), features_file=str(tmp_path / "x.npy"))  # labels: the folder's res101.mat
    assert torch.equal(got.features, data.features * 2) and torch.equal(got.labels, data.labels)
    a, b = (int(c) for c in data.seen_classes[:2])  # other labels (two seen classes swapped): --labels wins
    y = data.labels.numpy()
    shifted = np.where(y == a, b, np.where(y == b, a, y))
    for name, write in (("y.npy", lambda p: np.save(p, shifted)), ("y.txt", lambda p: np.savetxt(p, shifted, fmt="%d")),
                        ("y.mat", lambda p: scipy.io.savemat(p, {"labels": shifted[:, None] + 1}))):
        write(tmp_path / name)
        assert torch.equal(torch.from_numpy(read_labels(str(tmp_path / name))), torch.from_numpy(shifted))
        got = read_xlsa17_folder(str(path), features_file=str(tmp_path / "x.npy"), labels_file=str(tmp_path / name))
        assert torch.equal(got.labels, torch.from_numpy(shifted))
    np.save(tmp_path / "xt.npy", x.T)  # stored D × N, as xlsa17 does: turned by the label count
    assert torch.equal(read_xlsa17_folder(str(path), features_file=str(tmp_path / "xt.npy")).features, got.features)


def test_bad_feature_files_are_one_clear_line(folder, tmp_path):
    path, data = folder
    n, k = data.labels.numel(), data.num_classes
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "att_splits.mat").write_bytes((path / "att_splits.mat").read_bytes())  # no res101.mat here
    np.save(tmp_path / "x.npy", data.features.numpy())
    cases = [
        (dict(folder=bare, features_file=tmp_path / "x.npy"), "holds no labels and"),
        (dict(features_file=tmp_path / "missing.npy"), "file not found"),
        (dict(features_file=tmp_path / "x.csv"), "expected a .npy, .npz, .pt"),
        (dict(features_file=tmp_path / "short.npy"), f"but there are {n} labels"),
        (dict(features_file=tmp_path / "cube.npy"), "expected feature vectors [N, D]"),
        (dict(features_file=tmp_path / "x.npy", labels_file=tmp_path / "big.npy"), f"0-based class ids in [0, {k - 1}]"),
        (dict(features_file=tmp_path / "x.npy", labels_file=tmp_path / "frac.npy"), "are not integers"),
        (dict(features_file=tmp_path / "obj.pt"), "expected a tensor or a dict of tensors"),
        (dict(features_file=tmp_path / "noise.npz"), "cannot read it"),
    ]
    (tmp_path / "x.csv").write_text("1,2\n")
    np.save(tmp_path / "short.npy", data.features.numpy()[:-1])
    np.save(tmp_path / "cube.npy", data.features.numpy()[:, :, None])
    np.save(tmp_path / "big.npy", np.full(n, k))
    np.save(tmp_path / "frac.npy", np.full(n, 0.5))
    torch.save({"features": [1, 2]}, tmp_path / "obj.pt")
    (tmp_path / "noise.npz").write_bytes(b"PK\x03\x04 not a zip")
    for kwargs, words in cases:
        kwargs = {k: str(v) for k, v in kwargs.items()}
        with pytest.raises(ZSLError) as err:
            read_xlsa17_folder(kwargs.pop("folder", str(path)), **kwargs)
        assert words in str(err.value) and "\n" not in str(err.value), (kwargs, str(err.value))
    with pytest.raises(ZSLError, match="no 'features' entry"):
        np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
        read_arrays(str(tmp_path / "two.npz"))


def test_training_from_a_features_file(folder, tmp_path, capsys):
    path, data = folder
    root = str(path.parent)
    ref, own = tmp_path / "ref", tmp_path / "own"
    assert train_main(["--dataset", "mine", "--data-root", root, "--out", str(ref), "--no-progress"]) == 0
    np.savez(tmp_path / "f.npz", features=data.features.numpy(), labels=data.labels.numpy())
    assert train_main(["--dataset", "mine", "--data-root", root, "--features", str(tmp_path / "f.npz"),
                       "--out", str(own), "--no-progress"]) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, own))
    assert a["metrics"] == b["metrics"]
    run = json.loads((own / "run.json").read_text())
    assert {str(tmp_path / "f.npz"), str(path / "att_splits.mat")} <= set(run["data_files"])
    capsys.readouterr()
    for argv, words in ((["--labels", str(tmp_path / "f.npz")], "--labels goes with --features"),
                        (["--method", "scegg", "--features", str(tmp_path / "f.npz")], "reads region maps")):
        assert train_main(["--dataset", "mine", "--data-root", root, "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


def test_own_npy_files_to_new_class_predictions(tmp_path, capsys):
    """README's "Your own features, step by step", as written: the example's files, describe with
    --labels, check, train with --features/--labels, predict new classes from their vectors."""
    import csv
    import importlib.util
    import os

    from zslfast.data.__main__ import main as data_main
    from zslfast.predict import main as predict_main

    spec = importlib.util.spec_from_file_location(
        "own_features", os.path.join(os.path.dirname(__file__), "..", "..", "examples", "own_features.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    own = tmp_path / "own"
    example.main(["--out", str(own)])
    feats, labels = str(own / "feats.npy"), str(own / "labels.npy")
    assert data_main(["describe", "--classes", str(own / "classes.csv"), "--labels", labels,
                      "--out", str(tmp_path / "data" / "mine")]) == 0
    assert data_main(["check", str(tmp_path / "data" / "mine"), "--features", feats, "--labels", labels]) == 0
    assert "45 classes (40 seen / 5 unseen)" in capsys.readouterr().out
    run = tmp_path / "runs" / "mine"
    assert train_main(["--dataset", "mine", "--data-root", str(tmp_path / "data"), "--features", feats,
                       "--labels", labels, "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "predictions.csv"
    assert predict_main([str(run), "--features", str(own / "new_feats.npy"), "--classes", str(own / "new_classes.csv"),
                         "--setting", "zsl", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    truth = [f"synthetic_{int(c):03d}" for c in np.load(own / "new_labels.npy")]
    hits = sum(r["name_1"] == t for r, t in zip(rows, truth))
    assert len(rows) == len(truth) == 300 and hits / len(rows) > 2 * 0.2  # 5 new classes: twice chance at least
