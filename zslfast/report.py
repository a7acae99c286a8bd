"""One table from any set of run folders, in the field's layout.

    python -m zslfast.report RUN_DIR [RUN_DIR ...] [--md FILE] [--csv FILE] [--latex FILE] [--digits 1]
                             [--name RUN_DIR=LABEL ...]

Every ``results.json`` found under the given folders (a run folder, a ``--seeds`` folder, a sweep
folder) is one run. Runs are grouped into rows by method, variant (the ``--set`` / ``--config``
overrides of the run), selection protocol and semantic embedding (att / sent / w2v), and into column
groups by dataset; each group has ZSL T1 and GZSL U / S / H, or mSA / mUA / mH for continual
methods. A cell of several seeds shows mean ± sample std and its n; a cell that mixes two different
configurations (the config hash) is refused rather than averaged, naming the run folders of each.
``--name RUN_DIR=LABEL`` shows the runs under RUN_DIR with LABEL as their variant (e.g. "ours,
no attention" for ``--pooled-regions quick``). A transductive CVC run adds a row for its inductive
stage (variant "..., inductive stage": its ``inductive_*`` metrics, the model an inductive run of the
same configuration reports). The table is printed as Markdown and optionally
written as Markdown, CSV and LaTeX (``booktabs``; atomically).
"""
import argparse
import csv
import io
import json
import os
import sys

from zslfast.errors import ZSLError, run_cli
from zslfast.io import write_atomic_text
from zslfast.summary import CONTINUAL_METRICS, LABELS, ZSL_METRICS, describe, format_mean_std, summarize

ROW_KEYS = ("method", "variant", "selection", "embedding")


def find_results(paths, names=None):
    """Every results.json under ``paths`` (sorted, each read once), as dicts with their ``_path``;
    ``names``: {folder: label} sets the variant of the runs under each folder."""
    found = []
    for path in paths:
        if os.path.isfile(path):
            files = [path]
        elif os.path.isdir(path):
            files = [os.path.join(root, "results.json") for root, _, names in os.walk(path) if "results.json" in names]
        else:
            raise ZSLError(f"report: {path}: no such file or folder")
        if not files:
            raise ZSLError(f"report: {path}: no results.json in it")
        for f in sorted(files):
            try:
                with open(f) as fh:
                    r = json.load(fh)
                r["_path"] = f
                describe(r)
                if not isinstance(r["metrics"], dict) or not isinstance(r["seed"], int):
                    raise TypeError("'metrics' must be a mapping and 'seed' an integer")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                missing = f"no {exc} entry" if isinstance(exc, KeyError) else str(exc)
                raise ZSLError(f"report: {f}: not a zslfast results.json ({missing})") from None
            found.append(r)
            found += _stage_rows(r)
    unique = {os.path.realpath(r["_path"]): r for r in found}
    for folder, label in (names or {}).items():
        root = os.path.realpath(folder)
        matched = [r for k, r in unique.items() if k == root or k.startswith(root + os.sep)]
        if not matched:
            raise ZSLError(f"report: --name {folder}={label}: no run of the report is under {folder}")
        for r in matched:
            r["variant"] = label + r.get("_stage", "")
    return [unique[k] for k in sorted(unique)]


STAGE_PREFIXES = {"inductive_": "inductive stage"}  # a transductive CVC run reports its inductive model too


def _stage_rows(results):
    """Rows of their own for the earlier models a run reports beside its final one (``inductive_*``
    metrics: a transductive CVC run's inductive stage, the same model and numbers as an inductive
    run of that configuration), so a table shows both from one run."""
    rows = []
    for prefix, label in STAGE_PREFIXES.items():
        metrics = {k[len(prefix):]: v for k, v in results["metrics"].items() if k.startswith(prefix)}
        if metrics:
            stage = f", {label}" if results.get("variant") else label
            rows.append({**results, "metrics": metrics, "variant": results.get("variant", "") + stage,
                         "_stage": f", {label}", "_path": f"{results['_path']}#{label.replace(' ', '_')}"})
    return rows


def build_table(runs):
    """(datasets, metric names per dataset, rows): each row is {"key": {row keys}, "cells": {dataset: summary}}."""
    cells = {}
    for r in runs:
        ident = describe(r)
        cells.setdefault((tuple(ident[k] for k in ROW_KEYS), ident["dataset"]), []).append(r)
    rows, datasets = {}, []
    for (key, dataset), group in cells.items():
        hashes = sorted({describe(r)["config_hash"] for r in group})
        if len(hashes) > 1:
            paths = ", ".join(os.path.dirname(r["_path"]) for r in group)
            raise ZSLError(f"report: {key[0]} on {dataset} has runs of {len(hashes)} different configurations "
                           f"({', '.join(hashes)}: {paths}); give them different folders or variants")
        rows.setdefault(key, {})[dataset] = summarize(group)
        if dataset not in datasets:
            datasets.append(dataset)
    datasets.sort()
    columns = {}
    for d in datasets:
        present = {m for cells_ in rows.values() if d in cells_ for m in cells_[d]["headline"]}
        columns[d] = [m for m in ZSL_METRICS + CONTINUAL_METRICS if m in present]
    ordered = [{"key": dict(zip(ROW_KEYS, k)), "cells": rows[k]} for k in sorted(rows)]
    return datasets, columns, ordered


def _cell(summary, metric, digits):
    if summary is None or metric not in summary["metrics"]:
        return "–"
    return format_mean_std(summary["metrics"][metric], digits)


def _n(row):
    ns = sorted({len(s["seeds"]) for s in row["cells"].values()})
    return "/".join(map(str, ns))


def to_markdown(table, digits=1):
    """The table as Markdown: a header row of dataset: metric columns, one row per method setting."""
    datasets, columns, rows = table
    head = ["method", "variant", "selection", "embedding", "n"] + [f"{d} {LABELS[m]}" for d in datasets
                                                                   for m in columns[d]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
    for row in rows:
        k = row["key"]
        vals = [_cell(row["cells"].get(d), m, digits) for d in datasets for m in columns[d]]
        lines.append("| " + " | ".join([k["method"], k["variant"] or "–", k["selection"], k["embedding"], _n(row)]
                                       + vals) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table):
    """The table as CSV: per dataset and metric its mean, std and n (empty where absent)."""
    datasets, columns, rows = table
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(ROW_KEYS) + [f"{d}:{m}:{part}" for d in datasets for m in columns[d] for part in ("mean", "std", "n")])
    for row in rows:
        out = [row["key"][k] for k in ROW_KEYS]
        for d in datasets:
            for m in columns[d]:
                e = row["cells"].get(d, {}).get("metrics", {}).get(m)
                out += [repr(e["mean"]), repr(e["std"]), e["n"]] if e else ["", "", ""]
        w.writerow(out)
    return buf.getvalue()


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text):
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table, digits=1):
    """The table as a LaTeX ``tabular`` with ``booktabs`` rules: one column group per dataset
    (a ``cmidrule`` under its name), mean $\\pm$ std per cell."""
    datasets, columns, rows = table
    spec = "llll" + "r" + "".join("r" * len(columns[d]) for d in datasets)
    head1 = ["", "", "", "", ""] + [rf"\multicolumn{{{len(columns[d])}}}{{c}}{{{_tex(d)}}}" for d in datasets]
    rules, start = [], 6
    for d in datasets:
        rules.append(rf"\cmidrule(lr){{{start}-{start + len(columns[d]) - 1}}}")
        start += len(columns[d])
    head2 = ["method", "variant", "selection", "embedding", "n"] + [_tex(LABELS[m]) for d in datasets for m in columns[d]]
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head1) + r" \\", " ".join(rules),
             " & ".join(head2) + r" \\", r"\midrule"]
    for row in rows:
        k = row["key"]
        vals = [_cell(row["cells"].get(d), m, digits).replace(" ± ", r" $\pm$ ").replace("–", "--")
                for d in datasets for m in columns[d]]
        lines.append(" & ".join([_tex(k["method"]), _tex(k["variant"] or "--"), _tex(k["selection"]),
                                 _tex(k["embedding"]), _n(row)] + vals) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def report(paths, md=None, csv_path=None, digits=1, stream=None, latex=None, names=None):
    """Build the table of the runs under ``paths``, print it as Markdown, optionally write files."""
    table = build_table(find_results(paths, names))
    text = to_markdown(table, digits)
    (stream or sys.stdout).write(text)
    for path, content in ((md, lambda: text), (csv_path, lambda: to_csv(table)), (latex, lambda: to_latex(table, digits))):
        if path:
            try:
                write_atomic_text(path, content())
            except OSError as exc:
                raise ZSLError(f"report: cannot write {path} ({exc.strerror or exc})") from None
    return table


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run folders (searched for results.json)")
    p.add_argument("--md", help="also write the Markdown table to this file")
    p.add_argument("--csv", help="also write the table as CSV to this file")
    p.add_argument("--latex", help="also write the table as a LaTeX tabular (booktabs) to this file")
    p.add_argument("--digits", type=int, default=1, help="decimals (default 1)")
    p.add_argument("--name", action="append", default=[], metavar="RUN_DIR=LABEL",
                   help="show the runs under RUN_DIR with LABEL as their variant (repeatable)")
    args = p.parse_args(argv)

    def body():
        names = {}
        for item in args.name:
            folder, sep, label = item.partition("=")
            if not sep or not folder or not label:
                raise ZSLError(f"report: --name {item!r}: expected RUN_DIR=LABEL")
            names[folder] = label
        report(args.paths, args.md, args.csv, args.digits, latex=args.latex, names=names)

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
