"""Seeds × runs, summaries and the report table (zslfast.summary, zslfast.report, zslfast.sweep)."""
import csv
import io
import json
import statistics

import pytest

from zslfast import report, summary
from zslfast.errors import ZSLError
from zslfast.io import write_json
from zslfast.sweep import main as sweep_main
from zslfast.train import main as train_main


def fake_results(method="m", dataset="D", seed=0, metrics=None, config=None, variant="", selection="validation"):
    return {"method": method, "dataset": dataset, "setting": "zsl+gzsl", "variant": variant, "embedding": "att",
            "selection": {"on": selection}, "config": config or {"lr": 1.0}, "seed": seed,
            "metrics": metrics or {"zsl_t1": 10.0, "gzsl_u": 1.0, "gzsl_s": 2.0, "gzsl_h": 3.0},
            "timings": {"total_s": 1.0}}


def test_mean_std_is_the_sample_statistics():
    values = [1.0, 2.0, 6.0]
    assert summary.mean_std(values) == pytest.approx((3.0, statistics.stdev(values), 3))
    assert summary.mean_std([4.0]) == (4.0, 0.0, 1)


def test_summary_refuses_to_average_different_configurations():
    with pytest.raises(ZSLError, match="config_hash"):
        summary.summarize([fake_results(seed=0), fake_results(seed=1, config={"lr": 2.0})])
    with pytest.raises(ZSLError, match="seed appears twice"):
        summary.summarize([fake_results(seed=0), fake_results(seed=0)])
    # the hash does not depend on key order
    assert summary.config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == summary.config_hash({"b": {"d": 3, "c": 2}, "a": 1})


def test_report_layout_markdown_and_csv(tmp_path):
    runs = {"a/s0": fake_results("gen", "CUB", 0, {"zsl_t1": 50.0, "gzsl_u": 40.0, "gzsl_s": 60.0, "gzsl_h": 48.0}),
            "a/s1": fake_results("gen", "CUB", 1, {"zsl_t1": 54.0, "gzsl_u": 44.0, "gzsl_s": 62.0, "gzsl_h": 51.0}),
            "b": fake_results("gen", "SUN", 0, {"zsl_t1": 30.0, "gzsl_u": 20.0, "gzsl_s": 25.0, "gzsl_h": 22.0}),
            "c": fake_results("walk", "CUB", 0, {"mSA": 70.0, "mUA": 20.0, "mH": 31.0}, selection="fixed")}
    for name, r in runs.items():
        write_json(str(tmp_path / name / "results.json"), r)
    md_path, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    out = io.StringIO()
    datasets, columns, rows = report.report([str(tmp_path)], str(md_path), str(csv_path), stream=out)
    assert datasets == ["CUB", "SUN"]
    assert columns == {"CUB": ["zsl_t1", "gzsl_u", "gzsl_s", "gzsl_h", "mSA", "mUA", "mH"],
                       "SUN": ["zsl_t1", "gzsl_u", "gzsl_s", "gzsl_h"]}
    md = md_path.read_text()
    assert md == out.getvalue()
    lines = md.splitlines()
    assert lines[0].startswith("| method | variant | selection | embedding | n | CUB T1 | CUB U | CUB S | CUB H | CUB mSA")
    gen = next(line for line in lines if line.startswith("| gen "))
    # CUB: the two seeds' mean ± sample std (52 ± 2.83); SUN: one seed; continual columns empty
    assert "| 52.0 ± 2.8 | 42.0 ± 2.8 | 61.0 ± 1.4 | 49.5 ± 2.1 | – | – | – | 30.0 | 20.0 | 25.0 | 22.0 |" in gen
    assert "| validation | att | 1/2 |" in gen
    walk = next(line for line in lines if line.startswith("| walk "))
    assert "| fixed |" in walk and "| 70.0 | 20.0 | 31.0 |" in walk
    table = list(csv.DictReader(csv_path.open()))
    row = next(r for r in table if r["method"] == "gen")
    assert float(row["CUB:zsl_t1:mean"]) == 52.0 and int(row["CUB:zsl_t1:n"]) == 2
    assert float(row["CUB:zsl_t1:std"]) == pytest.approx(statistics.stdev([50.0, 54.0]))
    assert row["CUB:mH:mean"] == ""


def test_report_writes_latex_and_takes_variant_names(tmp_path):
    write_json(str(tmp_path / "ours" / "s0" / "results.json"),
               fake_results("gen_x", "CUB", 0, {"zsl_t1": 50.0, "gzsl_u": 40.0, "gzsl_s": 60.0, "gzsl_h": 48.0}))
    write_json(str(tmp_path / "ours" / "s1" / "results.json"),
               fake_results("gen_x", "CUB", 1, {"zsl_t1": 54.0, "gzsl_u": 44.0, "gzsl_s": 62.0, "gzsl_h": 51.0}))
    tex = tmp_path / "t.tex"
    assert report.main([str(tmp_path), "--latex", str(tex), "--name", f"{tmp_path / 'ours'}=no attention & 50%"]) == 0
    lines = tex.read_text().splitlines()
    assert lines[:3] == [r"\begin{tabular}{llllrrrrr}", r"\toprule", r" &  &  &  &  & \multicolumn{4}{c}{CUB} \\"]
    assert lines[3] == r"\cmidrule(lr){6-9}" and lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert r"gen\_x & no attention \& 50\% & validation & att & 2 & 52.0 $\pm$ 2.8 & 42.0 $\pm$ 2.8 & 61.0 $\pm$ 1.4 & " \
           r"49.5 $\pm$ 2.1 \\" in lines
    assert report.main([str(tmp_path), "--name", f"{tmp_path / 'elsewhere'}=x"]) == 2


def test_report_refuses_mixed_configurations_and_missing_folders(tmp_path):
    write_json(str(tmp_path / "x" / "results.json"), fake_results(seed=0))
    write_json(str(tmp_path / "y" / "results.json"), fake_results(seed=1, config={"lr": 3.0}))
    with pytest.raises(ZSLError, match=f"2 different configurations .*{tmp_path / 'x'}, {tmp_path / 'y'}"):
        report.report([str(tmp_path)], stream=io.StringIO())
    assert report.main([str(tmp_path / "nothing")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{")
    with pytest.raises(ZSLError, match="not a zslfast results.json"):
        report.find_results([str(tmp_path / "bad")])


def test_seeds_write_one_folder_per_seed_and_a_summary(tmp_path, capsys):
    out = tmp_path / "cvc"
    assert train_main(["--method", "cvc", "--quick", "--device", "cpu", "--no-progress", "--seeds", "0,1",
                       "--out", str(out)]) == 0
    per_seed = [json.loads((out / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in per_seed] == [0, 1] and per_seed[0]["metrics"] != per_seed[1]["metrics"]
    s = json.loads((out / "summary.json").read_text())
    assert s["seeds"] == [0, 1] and s["selection"] == "validation" and s["variant"] == "quick"
    for name in ("zsl_t1", "gzsl_h"):
        values = [r["metrics"][name] for r in per_seed]
        assert s["metrics"][name]["mean"] == pytest.approx(sum(values) / 2)
        assert s["metrics"][name]["std"] == pytest.approx(statistics.stdev(values))
        assert s["metrics"][name]["n"] == 2
    assert s["config_hash"] == summary.config_hash(per_seed[0]["config"])
    assert "± " in (out / "summary.md").read_text()
    with pytest.raises(SystemExit) as exit_:
        train_main(["--seeds", "0,x"])
    assert exit_.value.code == 2
    assert "expected seeds (integers" in capsys.readouterr().err


def test_sweep_runs_the_entries_and_prints_one_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep_main(["--methods", "eszsl,grw", "--quick", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    table = (out / "table.md").read_text()
    assert table in capsys.readouterr().out
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 2 and rows[0].startswith("| eszsl | quick |") and rows[1].startswith("| grw | quick | fixed |")
    eszsl = json.loads((out / "eszsl" / "seed0" / "results.json").read_text())
    assert f"| {eszsl['metrics']['zsl_t1']:.1f} |" in rows[0]
    assert sweep_main(["--methods", "eszsl,nope", "--out", str(out)]) == 2
    assert "unknown entry nope" in capsys.readouterr().err


def test_the_sweep_covers_every_registered_method():
    """A newly registered method is in the main job's table by being registered (this fails until
    ``zslfast.sweep.ENTRIES`` has it)."""
    from zslfast.engine import METHODS
    from zslfast.sweep import ENTRIES

    assert {args[args.index("--method") + 1] for _, args in ENTRIES} == set(METHODS)


def test_sweep_over_an_own_dataset_and_a_set_grid(tmp_path, capsys):
    """--dataset/--data-root take the sweep to any xlsa17 folder; --grid runs each entry per value
    (the values are the table's rows, named by their variant); --set applies to every run."""
    from zslfast.data.synthetic import make_synthetic, write_xlsa17

    write_xlsa17(make_synthetic(seed=0), str(tmp_path / "data"), "mine")
    out = tmp_path / "sweep"
    assert sweep_main(["--methods", "eszsl", "--dataset", "mine", "--data-root", str(tmp_path / "data"),
                       "--grid", "calibration=0,0.5", "--set", "feature_norm=none", "--out", str(out),
                       "--device", "cpu", "--no-progress", "--quick"]) == 0
    rows = [line for line in (out / "table.md").read_text().splitlines()[2:]]
    assert [line.split(" | ")[1] for line in rows] == ["calibration=0 feature_norm=none quick",
                                                         "calibration=0.5 feature_norm=none quick"]
    runs = {v: json.loads((out / "eszsl" / f"calibration={v}" / "seed0" / "results.json").read_text())
            for v in ("0", "0.5")}
    assert {r["dataset"] for r in runs.values()} == {"mine"}
    assert [runs[v]["config"]["calibration"] for v in ("0", "0.5")] == [0.0, 0.5]
    assert runs["0"]["config"]["feature_norm"] == runs["0.5"]["config"]["feature_norm"] == "none"
    assert (out / "table.tex").read_text().startswith(r"\begin{tabular}")
    assert sweep_main(["--methods", "eszsl", "--grid", "calibration", "--out", str(tmp_path / "x")]) == 2


def test_a_transductive_run_reports_its_inductive_stage_as_a_row(tmp_path_factory, capsys):
    """The main job runs CVC once (transductively): its table still has the inductive row, with the
    numbers of an inductive run of the same configuration."""
    from tests.quick_runs import quick_run, quick_run_folder

    inductive, _ = quick_run(tmp_path_factory, "cvc")
    folder = quick_run_folder(tmp_path_factory, "cvc", "--set", "transductive=true")
    _, _, rows = report.build_table(report.find_results([str(folder)]))
    by_variant = {r["key"]["variant"]: r["cells"]["synthetic"] for r in rows}
    assert set(by_variant) == {"transductive=true quick", "transductive=true quick, inductive stage"}
    stage = by_variant["transductive=true quick, inductive stage"]
    assert {k: v["mean"] for k, v in stage["metrics"].items()} == pytest.approx(inductive["metrics"], abs=1e-9)
    final = by_variant["transductive=true quick"]
    assert final["metrics"]["zsl_t1"]["mean"] != stage["metrics"]["zsl_t1"]["mean"]
    # --name labels both, keeping them apart
    named = report.find_results([str(folder)], names={str(folder): "ours"})
    assert sorted(r["variant"] for r in named) == ["ours", "ours, inductive stage"]
