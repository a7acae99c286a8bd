"""Runs you can trust: nothing lost or silently overwritten, corruption detected, bad input refused early.

Each case is one a user or a hostile file produced (issue 32's battery): the expectation is what a
careful user needs, written from the outside (exit codes, the one line on stderr, the files left
in the run folder), never read back from the code under test. Cheap cases use ESZSL (about a
second) or a CVC run interrupted after two steps.
"""
import errno
import hashlib
import json
import os
import subprocess
import zipfile

import numpy as np
import pytest
import scipy.io
import torch

import zslfast
import zslfast.io
from zslfast.data.synthetic import make_synthetic
from zslfast.engine.loop import Callback, train_epochs
from zslfast.engine.context import RunContext
from zslfast.errors import Diverged, ZSLError
from zslfast.train import main as train_main
from tests.quick_runs import quick_run

BASE = ["--device", "cpu", "--no-progress"]


def _run(args, capsys):
    """(exit code, stderr lines) of one in-process training command."""
    capsys.readouterr()
    code = train_main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def _error(args, capsys, code=2):
    """The one ``zslfast: error:`` line of a command that must fail with ``code``."""
    got, err = _run(args, capsys)
    assert got == code, err
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def _interrupted_cvc(folder, monkeypatch, capsys, *extra):
    """A CVC run stopped after its second training step (exit 3, resume.pt written)."""
    monkeypatch.setenv("ZSLFAST_INTERRUPT_AFTER", "2")
    code, err = _run(["--method", "cvc", "--quick", *BASE, "--out", str(folder), *extra], capsys)
    monkeypatch.delenv("ZSLFAST_INTERRUPT_AFTER")
    assert code == 3 and (folder / "resume.pt").is_file(), err


# ------------------------------------------------------------------------ nothing overwritten
def test_a_folder_holding_a_run_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(["--quick", *BASE, "--out", str(out)], capsys)[0] == 0
    before = (out / "results.json").read_bytes()
    line = _error(["--quick", *BASE, "--out", str(out), "--set", "calibration=0.5"], capsys)
    assert "holds another run's results" in line and "--overwrite" in line
    assert (out / "results.json").read_bytes() == before  # the first run's results are untouched
    assert _run(["--quick", *BASE, "--out", str(out), "--set", "calibration=0.5", "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "results.json").read_text())["config"]["calibration"] == 0.5


def test_an_interrupted_run_is_not_deleted_by_a_new_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cut"
    _interrupted_cvc(out, monkeypatch, capsys)
    state = (out / "resume.pt").read_bytes()
    line = _error(["--quick", *BASE, "--out", str(out)], capsys)
    assert "interrupted run" in line and f"--resume {out}" in line
    assert (out / "resume.pt").read_bytes() == state


def test_the_default_folder_moves_on_instead_of_overwriting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run(["--quick", *BASE], capsys)[0] == 0
    first = (tmp_path / "runs" / "eszsl_synthetic_seed0" / "results.json").read_bytes()
    code, err = _run(["--quick", *BASE, "--set", "calibration=0.5"], capsys)
    assert code == 0 and any("runs/eszsl_synthetic_seed0-2" in line for line in err)
    assert (tmp_path / "runs" / "eszsl_synthetic_seed0" / "results.json").read_bytes() == first
    second = json.loads((tmp_path / "runs" / "eszsl_synthetic_seed0-2" / "results.json").read_text())
    assert second["config"]["calibration"] == 0.5


def test_resume_alone_takes_the_runs_arguments_and_removes_stale_temporaries(tmp_path, tmp_path_factory,
                                                                               monkeypatch, capsys):
    out = tmp_path / "cut"
    _interrupted_cvc(out, monkeypatch, capsys)
    stale = out / ".resume.pt.k9x2ab.tmp"  # what kill -9 during a checkpoint write leaves behind
    stale.write_bytes(b"partial")
    assert _run(["--resume", str(out)], capsys)[0] == 0
    assert not stale.exists() and not (out / "resume.pt").exists()
    full = quick_run(tmp_path_factory, "cvc")[0]
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["metrics"] == full["metrics"] and resumed["config"] == full["config"]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and len(record["resumed"]) == 1


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path, capsys):
    line = _error(["--quick", *BASE, "--seeds", "0,1", "--resume", str(tmp_path / "nothing")], capsys)
    assert "no interrupted run there" in line
    assert not (tmp_path / "nothing" / "seed0" / "results.json").exists()
    assert "no such folder" in _error(["--resume", str(tmp_path / "nothing")], capsys)


def test_resume_with_a_damaged_seed_result_is_one_line(tmp_path, capsys):
    out = tmp_path / "seeds"
    assert _run(["--quick", *BASE, "--seeds", "0,1", "--out", str(out)], capsys)[0] == 0
    (out / "seed0" / "results.json").write_text('{"metrics": {"zsl_t1": 4')  # truncated
    (out / "seed1" / "resume.pt").write_bytes(b"")  # as if seed 1 had been interrupted
    line = _error(["--quick", *BASE, "--seeds", "0,1", "--resume", str(out)], capsys)
    assert "seed0/results.json cannot be read" in line


# ------------------------------------------------------------------------ results never lost
def _failing_writes(monkeypatch, name):
    """Every atomic write of a file called ``name`` fails as on a full disk."""
    real = zslfast.io.atomic_write

    def atomic_write(path, write):
        if os.path.basename(path) == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path, write)

    monkeypatch.setattr(zslfast.io, "atomic_write", atomic_write)


def test_a_full_disk_at_the_end_keeps_the_results_in_a_fallback_file(tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert _run(["--quick", *BASE, "--out", str(reference)], capsys)[0] == 0
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _failing_writes(monkeypatch, "results.json")
    line = _error(["--quick", *BASE, "--out", str(tmp_path / "full")], capsys, code=1)
    assert "cannot write" in line and "No space left on device" in line and "saved to" in line
    saved = line.split("saved to ")[1].split()[0]
    assert os.path.dirname(saved) == str(tmp_path)
    kept = json.loads(open(saved).read())
    assert kept["metrics"] == json.loads((reference / "results.json").read_text())["metrics"]


def test_a_model_file_that_cannot_be_written_names_it_and_keeps_the_results(tmp_path, monkeypatch, capsys):
    _failing_writes(monkeypatch, "model.pt")
    out = tmp_path / "run"
    line = _error(["--quick", *BASE, "--out", str(out)], capsys, code=1)
    assert f"cannot write {out / 'model.pt'} (No space left on device)" in line
    assert json.loads((out / "results.json").read_text())["metrics"]["zsl_t1"] > 0
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------ integrity
def _overwrite_inside_largest_tensor(path, n=64):
    """Overwrite ``n`` bytes in the middle of the largest tensor stored in a torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED and info.file_size > 2 * n
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
        start = info.header_offset + 30 + int(name_len) + int(extra_len)
        f.seek(start + info.file_size // 2)
        old = f.read(n)
        f.seek(start + info.file_size // 2)
        f.write(bytes((b ^ 0x5A) for b in old))


def test_bytes_changed_inside_a_checkpoint_tensor_are_detected(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cut"
    _interrupted_cvc(out, monkeypatch, capsys)
    torch.load(out / "resume.pt", weights_only=True)  # the damage below leaves a readable file
    _overwrite_inside_largest_tensor(out / "resume.pt")
    torch.load(out / "resume.pt", weights_only=True)
    assert "checksum mismatch" in _error(["--resume", str(out)], capsys)


def test_a_damaged_or_foreign_model_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(["--quick", *BASE, "--out", str(out)], capsys)[0] == 0
    zslfast.load(str(out))
    _overwrite_inside_largest_tensor(out / "model.pt")
    with pytest.raises(ZSLError, match="checksum mismatch"):
        zslfast.load(str(out))
    torch.save(torch.zeros(3), out / "resume.pt")  # a resume.pt that holds a tensor
    assert "holds a Tensor" in _error(["--resume", str(out), "--quick", *BASE], capsys)


def test_the_checksum_covers_every_value_key_and_shape():
    from zslfast.io import content_hash

    base = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 3, "names": ["a", "b"]}}
    h = content_hash(base)
    assert h == content_hash({"w": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 3, "names": ["a", "b"]}})
    changed = [{"w": torch.arange(6.0).reshape(3, 2), "meta": base["meta"]},
               {"w": torch.arange(6.0).reshape(2, 3).double(), "meta": base["meta"]},
               {"w": base["w"] + torch.tensor([[0, 0, 1e-6], [0, 0, 0]]), "meta": base["meta"]},
               {"w": base["w"], "meta": {"epoch": 4, "names": ["a", "b"]}},
               {"w": base["w"], "meta": {"epoch": 3, "names": ["a", "c"]}},
               {"v": base["w"], "meta": base["meta"]}]
    assert len({h, *(content_hash(c) for c in changed)}) == 1 + len(changed)


# ------------------------------------------------------------------------ divergence
def test_a_diverging_run_stops_with_one_line_naming_stage_and_epoch(tmp_path, capsys):
    out = tmp_path / "div"
    line = _error(["--method", "gsmflow", "--quick", *BASE, "--set", "lr=1e4", "--out", str(out)], capsys, code=1)
    assert "diverged in epoch 1 of stage 'gsmflow (validation)'" in line and "NaN/inf" in line
    assert not (out / "results.json").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"


class _Epochs(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, event):
        self.seen.append(event.epoch)


def test_the_loop_stops_at_a_nan_loss_before_any_callback_sees_that_epoch():
    calls = _Epochs()
    ctx = RunContext(device=torch.device("cpu"), seed=0, callbacks=[calls])
    epoch = {"n": 0}

    class Batches:
        def epoch(self):
            epoch["n"] += 1
            yield 0

    with pytest.raises(Diverged) as err:
        train_epochs("toy", 5, Batches(), lambda b: torch.tensor(float("nan") if epoch["n"] == 3 else 1.0), ctx)
    assert (err.value.stage, err.value.epoch) == ("toy", 3) and calls.seen == [1, 2]


# ------------------------------------------------------------------------ input checked before training
@pytest.fixture
def own_folder(tmp_path):
    """An xlsa17-format folder written by the package's synthetic writer, and a rewriter of its files."""
    from zslfast.data.synthetic import write_xlsa17

    data = make_synthetic(seed=0)
    write_xlsa17(data, str(tmp_path / "data"), "mine")
    folder = tmp_path / "data" / "mine"

    def rewrite(name, **fields):
        mat = {k: v for k, v in scipy.io.loadmat(folder / name).items() if not k.startswith("__")}
        mat.update(fields)
        for k in [k for k, v in fields.items() if v is None]:
            del mat[k]
        scipy.io.savemat(folder / name, mat)
        return mat

    return tmp_path / "data", folder, rewrite


def _own(root, *extra):
    return ["--dataset", "mine", "--data-root", str(root), "--quick", *BASE, "--out", str(root / "out"), *extra]


def test_fractional_labels_and_complex_features_are_refused(own_folder, capsys):
    root, folder, rewrite = own_folder
    mat = rewrite("res101.mat")
    labels = mat["labels"].astype(np.float64)
    labels[3] += 0.5
    rewrite("res101.mat", labels=labels)
    assert "are not integers" in _error(_own(root), capsys)
    rewrite("res101.mat", labels=mat["labels"], features=mat["features"] * (1 + 1j))
    assert "complex" in _error(_own(root), capsys)
    assert not (root / "out" / "run.json").exists()  # refused before the run started


def test_transposed_or_unnormalised_attributes_warn_with_the_fix(own_folder, capsys):
    root, folder, rewrite = own_folder
    att = rewrite("att_splits.mat")["att"]  # d × C, unit-norm columns
    rewrite("att_splits.mat", att=att.T.copy(), allclasses_names=None)
    with pytest.warns(UserWarning, match="looks transposed.*save its transpose"):
        train_main(_own(root))
    rewrite("att_splits.mat", att=att * 100)
    with pytest.warns(UserWarning, match="far from unit length.*divide each class's attributes by their L2 norm"):
        assert train_main(_own(root, "--overwrite")) == 0


def test_validation_settings_the_data_makes_meaningless_are_refused(own_folder, capsys):
    root, folder, rewrite = own_folder
    line = _error(_own(root, "--set", "validation.unseen_fraction=0.5"), capsys)
    assert "has its own validation classes (val_loc)" in line
    rewrite("att_splits.mat", val_loc=None, train_loc=None)  # no val_loc: the fraction is used
    line = _error(_own(root, "--set", "validation.unseen_fraction=0.99"), capsys)
    assert "leaving 0 to train on" in line and "validation.unseen_fraction=0.2" in line


def test_episode_ways_beyond_the_validation_views_classes_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "cvc"
    # the built-in data's validation view trains on 32 of the 40 seen classes (8 are its unseen ones)
    line = _error(["--method", "cvc", "--quick", *BASE, "--set", "transductive=true",
                   "--set", "transductive_training.ways=33", "--out", str(out)], capsys)
    assert "transductive_training.ways = 33" in line and "has 32" in line and "--set transductive_training.ways=32" in line
    assert not (out / "run.json").exists()


def test_ignored_settings_and_bad_arguments_are_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    cases = [(["--method", "scegg", "--set", f"w2v={tmp_path / 'missing.npy'}"], "synthetic region data carries its own"),
             (["--set", "gan.hidden=1e9", "--method", "tfvaegan"], "gan.hidden = 1000000000.0: expected an integer in [1, 65536]"),
             (["--config", str(tmp_path)], "is a folder; --config takes a YAML file")]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: 3\n  lr: [1,\nfoo: {\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00epochs")
    cases += [(["--config", str(bad_yaml)], "invalid YAML at line 2, column 5"),
              (["--config", str(binary)], "not a UTF-8 text file")]
    for args, message in cases:
        line = _error([*args, "--quick", *BASE, *out], capsys)
        assert message in line, (args, line)
    for args in (["--seed", str(2 ** 64)], ["--data-seed", "-1"]):  # the parser's own one line
        with pytest.raises(SystemExit) as exit_:
            train_main([*args, *BASE, *out])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and "a seed must lie in [0, 2^63 - 1]" in err[0]
    assert not (tmp_path / "o" / "run.json").exists()


# ------------------------------------------------------------------------ region files
@pytest.fixture(scope="module")
def small_regions():
    """A small synthetic region dataset (12 classes × 10 images, 16 channels, 2×2 regions)."""
    from zslfast.data.synthetic_regions import make_synthetic_regions

    return make_synthetic_regions(seed=0, num_classes=12, num_unseen=3, attribute_dim=8, images_per_class=10,
                                  channels=16, grid=(2, 2))


def _region_file(data, path, nan_image=None, compression=None, group_labels=False):
    import h5py

    from zslfast.data.regions import write_region_dataset

    write_region_dataset(data, str(path), compression=compression, chunks="image")
    with h5py.File(path, "r+") as f:
        if nan_image is not None:
            m = f["feature_map"][nan_image]
            m.flat[5] = np.nan
            f["feature_map"][nan_image] = m
        if group_labels:
            labels = f["labels"][()]
            del f["labels"]
            f.create_group("labels").create_dataset("values", data=labels)


def _data_main(args, capsys):
    from zslfast.data.__main__ import main as data_main

    capsys.readouterr()
    code = data_main(args)
    return code, capsys.readouterr().err.strip().splitlines()


def test_region_files_with_a_nan_map_a_group_or_a_damaged_chunk_are_one_line(small_regions, tmp_path, capsys):
    pytest.importorskip("h5py")
    folder = tmp_path / "regions" / "R"
    folder.mkdir(parents=True)
    path = folder / "feature_map_ResNet_101_R.hdf5"
    _region_file(small_regions, path, nan_image=37)
    for args in (["regions", "info", str(path)], ["check", str(folder)]):
        code, err = _data_main(args, capsys)
        assert code == 2 and len(err) == 1 and "images [37]" in err[0] and "NaN/inf" in err[0], err
    line = _error(["--method", "scegg", "--dataset", "R", "--data-root", str(tmp_path / "regions"), "--quick",
                   *BASE, "--out", str(tmp_path / "o")], capsys)
    assert "images [37]" in line and not (tmp_path / "o" / "run.json").exists()
    _region_file(small_regions, path, group_labels=True)
    code, err = _data_main(["regions", "info", str(path)], capsys)
    assert code == 2 and err == [f"zslfast: error: {path}: 'labels' must be an HDF5 dataset, got a Group"]
    _region_file(small_regions, path, compression="gzip")
    import h5py

    with h5py.File(path, "r") as f:
        offset, size = f["feature_map"].id.get_chunk_info(11).byte_offset, f["feature_map"].id.get_chunk_info(11).size
    with open(path, "r+b") as f:  # garble the middle of image 11's compressed chunk
        f.seek(offset + size // 2)
        f.write(b"\x00" * 16)
    for storage in ("memory", "stream"):  # read whole, or image by image
        code, err = _data_main(["regions", "info", str(path), "--storage", storage], capsys)
        assert code == 2 and len(err) == 1 and "the file is damaged" in err[0], (storage, err)


# ------------------------------------------------------------------------ report and plots
def test_report_and_plot_refuse_bad_files_with_one_line(tmp_path, capsys):
    from zslfast.plot import main as plot_main
    from zslfast.report import main as report_main

    out = tmp_path / "run"
    assert _run(["--quick", *BASE, "--out", str(out)], capsys)[0] == 0
    zslfast.io.save_checkpoint(out / "features.pt", {"features": torch.randn(40, 8), "labels": torch.arange(40) % 4})
    results = json.loads((out / "results.json").read_text())
    del results["timings"]  # results written by another tool: the report does not need timings
    (out / "results.json").write_text(json.dumps(results))
    assert report_main([str(out)]) == 0
    capsys.readouterr()
    assert report_main([str(out), "--md", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"zslfast: error: {tmp_path}: is a folder; expected the name of a file to write"
    _overwrite_inside_largest_tensor(out / "features.pt")
    capsys.readouterr()
    assert plot_main(["tsne", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch" in err[0]

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"features": Payload()}, out / "features.pt")
    assert plot_main(["tsne", str(out)]) == 2
    captured = capsys.readouterr()
    assert "code ran" not in captured.out and len(captured.err.strip().splitlines()) == 1


# ------------------------------------------------------------------------ the run's record
def test_the_run_folder_records_command_config_log_versions_and_data_hashes(own_folder, capsys):
    import yaml

    root, folder, _ = own_folder
    args = _own(root, "--set", "calibration=0.25")
    assert _run(args, capsys)[0] == 0
    out = root / "out"
    record = json.loads((out / "run.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert record["command"].endswith("--set calibration=0.25") and record["args"]["set"] == ["calibration=0.25"]
    assert record["status"] == "finished" and record["started"] <= record["finished"]
    assert record["zslfast_version"] == zslfast.__version__ and record["torch_version"] == torch.__version__
    source = os.path.dirname(os.path.dirname(os.path.abspath(zslfast.__file__)))
    head = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (CI's clone, a developer's): the commit the run used
        assert record["git_commit"].split("+")[0] == head.stdout.strip()
    for name in ("res101.mat", "att_splits.mat"):
        entry = record["data_files"][str(folder / name)]
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config == results["config"]
    log = (out / "log.txt").read_text().splitlines()
    assert any(line.endswith("[zslfast] eszsl on mine: 3000 samples × 512-d features, 50 classes (40 seen / 10 "
                             "unseen), 64-d class embeddings; splits {'trainval': 1920, 'test_seen': 480, "
                             "'test_unseen': 600, 'train': 1536, 'val': 384}") for line in log)
    t1 = f"{results['metrics']['zsl_t1']:8.2f}"
    assert any(line[:4].isdigit() and line.endswith(f"zsl_t1  {t1}") for line in log), log
