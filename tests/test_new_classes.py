"""New classes at predict time (``zslfast.Model.with_classes``, ``predict --classes``) and the Python
training API (``zslfast.fit``).

Every registered method trains on the built-in data with half of its unseen classes left out of
every split (:meth:`ZSLDataset.without_classes`), then gets them back from their attribute vectors
alone: its ZSL accuracy among them must be well above chance (twice chance). The bookkeeping is
checked against hand-worked expectations: re-adding ESZSL's own unseen classes gives its own ZSL
predictions; classes that are trained seen classes are recognised; bad class files are refused in
one line. ``fit`` gives the training command's results for the same settings and seed."""
import csv

import numpy as np
import pytest
import torch

import zslfast
from tests.quick_runs import left_out_data, left_out_run, quick_run, quick_run_folder
from zslfast.data import make_synthetic
from zslfast.data.synthetic import write_att_splits
from zslfast.engine import METHODS, method_class
from zslfast.engine.generative import GenerativeMethod
from zslfast.errors import ZSLError


def _per_class_accuracy(pred, labels, classes):
    return 100 * sum(float((pred[labels == c] == c).double().mean()) for c in classes) / len(classes)


def _case(method, settings=None):
    slow = issubclass(method_class(method), GenerativeMethod)  # 10-30 s each: the slow tier
    name = method + ("_" + "_".join(settings) if settings else "")
    return pytest.param(method, settings or {}, id=name, marks=[pytest.mark.slow] if slow else [])


# The two GAN baselines refit through the same GenerativeMethod.with_classes as GSMFlow and SC-EGG;
# their own part (the exported generator) is checked on their quick runs, which the slow tier trains
# anyway, with their never-trained-on unseen classes given as new classes (below): training each
# again without five classes took 51 s of CI.
REFIT_ON_QUICK_RUNS = ("tfvaegan", "clswgan")
CASES = [_case(m) for m in sorted(METHODS) if m not in REFIT_ON_QUICK_RUNS] + [_case("cvc", {"transductive": True})]


def test_every_registered_method_is_a_case():
    assert {c.values[0] for c in CASES} | set(REFIT_ON_QUICK_RUNS) == set(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("method", REFIT_ON_QUICK_RUNS)
def test_a_gan_baseline_refit_recognises_classes_given_by_their_vectors(method, tmp_path_factory):
    """The quick run's unseen classes (no training image; their generator never saw them) given as
    new classes: the refit classifiers recognise them at twice chance or better."""
    model = zslfast.load(quick_run_folder(tmp_path_factory, method))
    data = make_synthetic(seed=0)
    u = data.unseen_classes
    again = model.with_classes(([f"new_{data.class_names[int(c)]}" for c in u], data.attributes[u]))
    assert again.refit_s > 0 and again.class_names_all[:10] == [f"new_{data.class_names[int(c)]}" for c in u]
    rows = data.splits["test_unseen"]
    pred = again.predict(data.features[rows], "zsl")
    assert pred.max() < 10
    acc = _per_class_accuracy(pred, torch.searchsorted(u, data.labels[rows]), range(10))
    assert acc >= 2 * 100 / 10, f"{method}: {acc:.1f}% among its 10 unseen classes given anew"


@pytest.mark.parametrize("method,settings", CASES)
def test_left_out_classes_are_recognised_from_their_vectors(method, settings, tmp_path_factory):
    full, left_out, data = left_out_data(method)  # 5 of the 10 unseen classes: no image of them is ever seen
    assert data.num_classes == full.num_classes - left_out.numel()
    assert not set(data.class_names) & {full.class_names[int(c)] for c in left_out}
    run = left_out_run(tmp_path_factory, method, **settings)
    assert run.results["dataset"].endswith("_without_5_classes")
    names = [full.class_names[int(c)] for c in left_out]
    model = run.model.with_classes((names, full.attributes[left_out]))
    assert model.class_names_all[:5] == names and model.unseen.tolist() == list(range(5))
    rows = torch.nonzero(torch.isin(full.labels, left_out)).flatten()
    x = full.features.read(rows) if method_class(method).inputs == "regions" else full.features[rows]
    y = torch.searchsorted(left_out, full.labels[rows])
    pred = model.predict(x, "zsl")
    assert pred.max() < 5  # ZSL predicts among the new classes only
    acc = _per_class_accuracy(pred, y, range(5))
    assert acc >= 2 * 100 / 5, f"{method}: {acc:.1f}% among 5 new classes"
    if not issubclass(method_class(method), GenerativeMethod):
        # an embedding method scores each class on its own: the trained seen classes' GZSL scores
        # are the trained model's (a generative method's classifiers are retrained instead)
        kept = model.record["classes"]["trained_ids"]
        assert torch.allclose(model.scores(x)[:, 5:], run.model.scores(x)[:, kept], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def eszsl_folder(tmp_path_factory):
    return quick_run_folder(tmp_path_factory, "eszsl")


def test_readding_the_trained_unseen_classes_gives_the_same_zsl_predictions(eszsl_folder):
    """ESZSL scores a class by x·V·aᵀ: with its own unseen classes given as new classes (ids 0..9 in
    unseen order) its ZSL predictions are the original ones, renumbered."""
    model = zslfast.load(eszsl_folder)
    data = make_synthetic(seed=0)
    u = data.unseen_classes
    again = model.with_classes(([data.class_names[int(c)] for c in u], data.attributes[u]))
    x = data.features[data.splits["test_unseen"]]
    assert torch.equal(u[again.predict(x, "zsl")], model.predict(x, "zsl"))
    names, emb = again.classes
    assert names == [data.class_names[int(c)] for c in torch.cat([u, data.seen_classes])]
    assert torch.equal(emb, data.attributes[torch.cat([u, data.seen_classes])])
    assert torch.equal(again.scores(x)[:, 10:], model.scores(x)[:, data.seen_classes])  # seen classes kept


def test_class_files_and_refusals(eszsl_folder, tmp_path):
    model = zslfast.load(eszsl_folder)
    data = make_synthetic(seed=0)
    u = data.unseen_classes.tolist()
    names = [data.class_names[c] for c in u]
    # an att_splits.mat of the training data: its seen classes are recognised, its unseen ones added
    write_att_splits(data, str(tmp_path / "DS"))
    from_mat = model.with_classes(str(tmp_path / "DS" / "att_splits.mat"))
    assert from_mat.class_names_all[:10] == names and len(from_mat.class_names_all) == data.num_classes
    # a CSV with or without a header, or the extractor's class,split,... table: the same classes
    vectors = data.attributes[u].tolist()
    plain, header, table = (tmp_path / n for n in ("plain.csv", "header.csv", "table.csv"))
    with open(plain, "w", newline="") as f:
        csv.writer(f).writerows([[n] + v for n, v in zip(names, vectors)])
    with open(header, "w", newline="") as f:
        csv.writer(f).writerows([["name"] + [f"a{i}" for i in range(len(vectors[0]))]]
                                + [[n] + v for n, v in zip(names, vectors)])
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["class", "split"] + [f"a{i}" for i in range(len(vectors[0]))]]
                                + [[n, "unseen"] + v for n, v in zip(names, vectors)])
    x = data.features[:40]
    want = from_mat.predict(x)
    for path in (plain, header, table):
        assert torch.equal(model.predict(x, classes=str(path)), want)
    assert torch.equal(model.predict(x, classes=dict(zip(names, vectors))), want)
    # refusals, one line each
    seen = int(data.seen_classes[0])
    for spec, message in [
        ((["a"], torch.zeros(1, 3)), "vectors of width 3, the model's class embeddings have 64"),
        ((["a"], torch.full((1, 64), float("nan"))), "NaN or infinite"),
        ((["a", "a"], torch.zeros(2, 64)), "names must be unique"),
        (([data.class_names[seen]], torch.zeros(1, 64)), "a trained seen class with another vector"),
        (([data.class_names[seen]], data.attributes[[seen]]), "nothing new to add"),
        ((["a", "b"], torch.zeros(3, 64)), r"2 names need a \[2, d\] matrix"),
        (str(tmp_path / "missing.csv"), "file not found"),
    ]:
        with pytest.raises(ZSLError, match=message):
            model.with_classes(spec)
    (tmp_path / "bad.csv").write_text("x,1,2\ny,1,oops\n")
    with pytest.raises(ZSLError, match="row 2 \\('y'\\) must be a name followed by numbers"):
        model.with_classes(str(tmp_path / "bad.csv"))


def test_new_classes_through_data_root_and_the_command_line(tmp_path, capsys):
    """An own dataset folder (xlsa17 files) without 5 classes, trained by the command; then the
    full dataset's att_splits.mat and res101.mat given to ``predict``: its seen classes are
    recognised as trained ones, its 10 other classes (5 never trained on) become the candidates.
    ESZSL: an own dataset takes a method's paper settings, and the learned methods' paper budgets
    are not sized for this data even under --quick (CVC's T1 is at chance here: its lr 1e-5 for
    600 epochs cut to a few); the loading and prediction path is every method's."""
    method = "eszsl"
    from zslfast.data.synthetic import write_xlsa17
    from zslfast.predict import main as predict_main
    from zslfast.train import main as train_main

    full = make_synthetic(seed=0)
    left_out = full.unseen_classes[::2]
    write_xlsa17(full.without_classes(left_out), str(tmp_path / "root"), "OWN")
    write_xlsa17(full, str(tmp_path / "full"), "ALL")
    assert train_main(["--method", method, "--dataset", "OWN", "--data-root", str(tmp_path / "root"), "--quick",
                       "--no-progress", "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "pred.csv"
    assert predict_main([str(tmp_path / "run"), "--features", str(tmp_path / "full" / "ALL" / "res101.mat"),
                         "--classes", str(tmp_path / "full" / "ALL" / "att_splits.mat"), "--setting", "zsl",
                         "--out", str(out)]) == 0
    assert "10 new classes" in capsys.readouterr().err
    names = [r.split(",")[2] for r in out.read_text().splitlines()[1:]]
    rows = torch.nonzero(torch.isin(full.labels, left_out)).flatten().tolist()
    truth = [full.class_names[int(full.labels[i])] for i in rows]
    hits = [names[i] == t for i, t in zip(rows, truth)]
    assert 100 * sum(hits) / len(hits) >= 2 * 100 / 10  # twice chance among the 10 candidates


def test_generative_refit_is_seeded_and_the_command_line_gives_the_api_predictions(tmp_path_factory, tmp_path,
                                                                                    capsys):
    from zslfast.predict import main as predict_main

    folder = quick_run_folder(tmp_path_factory, "gsmflow")
    model = zslfast.load(folder)
    data = make_synthetic(seed=0)
    u = data.unseen_classes[::3]
    names = [data.class_names[int(c)] for c in u]
    with open(tmp_path / "new.csv", "w", newline="") as f:
        csv.writer(f).writerows([[n] + v for n, v in zip(names, data.attributes[u].tolist())])
    a, b, c = (model.with_classes(str(tmp_path / "new.csv"), seed=s) for s in (0, 0, 1))
    for kind in ("gzsl", "zsl"):
        assert torch.equal(a.record["model"]["classifiers"][kind]["fc.weight"],
                           b.record["model"]["classifiers"][kind]["fc.weight"])
    assert not torch.equal(a.record["model"]["classifiers"]["zsl"]["fc.weight"],
                           c.record["model"]["classifiers"]["zsl"]["fc.weight"])
    x = data.features[data.splits["test_unseen"]][:30]
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "pred.csv"
    assert predict_main([str(folder), "--features", str(tmp_path / "x.npy"), "--classes", str(tmp_path / "new.csv"),
                         "--setting", "zsl", "--out", str(out)]) == 0
    rows = [r.split(",") for r in out.read_text().splitlines()[1:]]
    assert [int(r[1]) for r in rows] == a.predict(x, "zsl").tolist()
    assert [r[2] for r in rows] == a.class_names(a.predict(x, "zsl"))
    capsys.readouterr()
    (tmp_path / "wide.csv").write_text("z," + ",".join(["0.1"] * 65) + "\n")
    assert predict_main([str(folder), "--features", str(tmp_path / "x.npy"), "--classes", str(tmp_path / "wide.csv"),
                         "--out", str(tmp_path / "no.csv")]) == 2
    assert "vectors of width 65" in capsys.readouterr().err and not (tmp_path / "no.csv").exists()


def test_without_classes_renumbers_and_keeps_every_other_row():
    data = make_synthetic(seed=0)
    drop = [int(data.unseen_classes[0]), data.class_names[int(data.seen_classes[0])]]
    out = data.without_classes(drop)
    gone = {int(data.unseen_classes[0]), int(data.seen_classes[0])}
    kept = [c for c in range(data.num_classes) if c not in gone]
    assert out.class_names == [data.class_names[c] for c in kept]
    assert torch.equal(out.attributes, data.attributes[kept])
    for split, idx in data.splits.items():
        rows = idx[~torch.isin(data.labels[idx], torch.tensor(sorted(gone)))]
        assert torch.equal(out.features[out.splits[split]], data.features[rows])
        assert [out.class_names[int(c)] for c in out.labels[out.splits[split]]] == \
            [data.class_names[int(c)] for c in data.labels[rows]]
    with pytest.raises(ZSLError, match="no class named 'nope'"):
        data.without_classes(["nope"])


# ------------------------------------------------------------------------------------------ fit
def test_fit_gives_the_command_lines_results(tmp_path_factory, tmp_path):
    for method, settings, extra in [("eszsl", {}, ()), ("cvc", {}, ()),
                                    ("eszsl", {"calibration": 0.5}, ("--set", "calibration=0.5"))]:
        cli, _ = quick_run(tmp_path_factory, method, *extra)
        run = zslfast.fit(method, quick=True, out=str(tmp_path / f"{method}{len(extra)}"), progress=False, **settings)
        assert run.metrics == cli["metrics"] and run.results["selection"] == cli["selection"]
        assert run.results["config"] == cli["config"] and run.curves == cli["history"]


def test_fit_takes_arrays_and_refuses_bad_input_before_training(tmp_path):
    data = make_synthetic(seed=0)
    arrays = zslfast.from_arrays(data.features.numpy(), data.labels.numpy(), data.attributes.numpy(),
                                 trainval=data.splits["trainval"].numpy(), test_seen=data.splits["test_seen"],
                                 test_unseen=data.splits["test_unseen"], val=data.splits["val"],
                                 class_names=data.class_names, name="mine")
    run = zslfast.fit("eszsl", arrays, out=str(tmp_path / "mine"), progress=False)
    assert run.results["dataset"] == "mine" and run.results["data_seed"] is None
    # the same arrays under another name: the built-in data's run (both take ESZSL's default settings)
    named = zslfast.fit("eszsl", make_synthetic(seed=0), out=str(tmp_path / "builtin"), progress=False)
    assert named.results["dataset"] == "synthetic" and named.results["data_seed"] == 0
    assert run.metrics == named.metrics
    for kwargs, message in [({"bogus": 1}, "unknown setting 'bogus'"),
                            ({"seed": "x"}, "--seed: 'x': expected an integer"),
                            ({"gamma_exponents": object()}, "is not a number, string")]:
        with pytest.raises(ZSLError, match=message):
            zslfast.fit("eszsl", out=str(tmp_path / "never"), **kwargs)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ZSLError, match="fractional"):
        zslfast.from_arrays(data.features, data.labels.double() + 0.5, data.attributes,
                            trainval=data.splits["trainval"], test_seen=data.splits["test_seen"],
                            test_unseen=data.splits["test_unseen"])
