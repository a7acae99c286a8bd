"""Plots of a finished run (PNG, PDF or SVG by the file's extension; matplotlib's Agg backend;
``pip install "zslfast[plots]"``).

    python -m zslfast.plot KIND RUN_DIR [--out FILE.png|.pdf|.svg] [--dpi 100] [--max-points 1500]
                           [--classes 10]
    python -m zslfast.plot seen-unseen RUN_DIR [RUN_DIR ...] [--out FILE.pdf]

Axes are labelled, epochs are integer ticks, legends sit where they cover least (beside the t-SNE).

KIND is one of:

- ``tsne``: t-SNE (scikit-learn) of real seen, real unseen and synthetic unseen features of a
  generative method (GSMFlow, SC-EGG), coloured by class, one marker per kind; needs the run's
  ``features.pt`` (``--save-features`` or ``--plots``): the last generative evaluation's features
  in the generator's space (the final refit's under validation selection; the last evaluated epoch's
  under ``--select-on-test``), at most 50 per class, subsampled to ``--max-points``; ``--classes K``
  draws K classes only (seeded; every kind of point of those classes), one distinct colour each,
  which keeps the plot readable on datasets with many classes.
- ``curves``: one panel per training stage from results.json's per-epoch history: every loss (left
  axis) and the evaluation score (right axis), the chosen epoch marked.
- ``tasks``: continual methods (GRW): S / U / H per task.
- ``seen-unseen``: the seen–unseen accuracy curve of a GZSL run (calibrated stacking swept over
  every value that changes a prediction; Chao et al., ECCV 2016), its area (AUSUC) in the legend and
  the run's own operating point marked; several RUN_DIRs draw one curve each on the same axes (a
  paper's comparison figure). From results.json's ``seen_unseen`` (every GZSL run writes it).
- ``attention``: SC-EGG: the attention maps on the region grid of a few test-unseen images and
  attributes, the synthetic data's planted footprints drawn as squares (solid: the attribute's
  region; dashed: its half-weight neighbour); needs ``features.pt``.

``python -m zslfast.train ... --plots`` writes every kind that applies to ``<out>/plots/KIND.png``.
Each plot function returns what it drew (point counts per kind, panel count), which the tests check
against the data.
"""
import argparse
import json
import os
import sys

import torch

from zslfast.errors import ZSLError, run_cli
from zslfast.io import load_checked

KINDS = ("tsne", "curves", "tasks", "seen-unseen", "attention")
DPI = 80


def attention_examples(net, data, images=4, attributes=3):
    """What the attention plot shows (SC-EGG with ``--save-features``): the stage-1 net's attention maps of the
    first test-unseen image of each of the first ``images`` unseen classes, for each image's
    ``attributes`` strongest attributes (of those planted in it, for synthetic data), with the
    planted footprints (region, neighbour; -1 where absent) when the data has them."""
    with data.scoring(report=True):  # a plot of test images: only after the run's final scoring
        tu = data.splits["test_unseen"].cpu()
    labels = data.labels.cpu()[tu]
    picks = [int(tu[torch.nonzero(labels == c).flatten()[0]]) for c in torch.unique(labels)[:images]]
    idx = torch.tensor(picks)
    device = next(net.parameters()).device
    with torch.no_grad():
        _, _, attn = net(data.features.read(idx).to(device))  # [n, A, R]
    att = data.attributes.cpu()[data.labels.cpu()[idx]]  # [n, A]
    fp = data.footprints
    if fp is not None:
        att = torch.where(fp["region"][idx] >= 0, att, torch.full_like(att, -float("inf")))
    chosen = att.topk(attributes, dim=1).indices  # [n, k]
    maps = torch.stack([attn[i, chosen[i]].cpu() for i in range(len(picks))])  # [n, k, R]
    r = maps.shape[-1]
    side = int(round(r ** 0.5))
    grid = data.info.get("synthetic", {}).get("grid") or ([side, side] if side * side == r else [1, r])
    out = {"images": idx, "labels": data.labels.cpu()[idx].clone(), "attributes": chosen, "maps": maps.float(),
           "grid": list(grid), "footprints": None}
    if fp is not None:
        out["footprints"] = {k: torch.stack([fp[k][i, chosen[j]] for j, i in enumerate(picks)]).long()
                             for k in ("region", "neighbour")}
    return out


def require_plotting():
    """--plots: matplotlib and scikit-learn are importable (checked before training), else one error."""
    import importlib.util

    missing = [m for m, mod in (("matplotlib", "matplotlib"), ("scikit-learn", "sklearn"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise ZSLError(f"--plots needs {' and '.join(missing)}: pip install \"zslfast[plots]\"")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ZSLError('plots need matplotlib: pip install "zslfast[plots]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FORMATS = ("png", "pdf", "svg")


def plot_format(path):
    """The file format of ``path`` from its extension (png, pdf or svg), one clear error otherwise."""
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise ZSLError(f"plot {path}: the extension picks the format: use .png, .pdf or .svg")
    return ext


def _save(fig, path, dpi=None):
    """Save a figure to ``path`` atomically (temporary file, then rename), in the format its
    extension names, at ``dpi`` (PNG; default DPI)."""
    from zslfast.io import atomic_write

    fmt = plot_format(path)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi or DPI))
    fig.clf()


def load_run(run_dir):
    """(results dict, artifacts dict or None) of a run folder."""
    path = os.path.join(run_dir, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as exc:
        raise ZSLError(f"plot {run_dir}: no readable results.json ({exc})") from None
    art = os.path.join(run_dir, "features.pt")
    artifacts = load_checked(art, "plot") if os.path.isfile(art) else None
    return results, artifacts


def applicable(results, artifacts):
    """The plot kinds a run has the data for."""
    kinds = ["curves"] if results.get("history") else []
    if results.get("per_task"):
        kinds.append("tasks")
    if results.get("seen_unseen"):
        kinds.append("seen-unseen")
    if artifacts and "features" in artifacts:
        kinds.append("tsne")
    if artifacts and "attention" in artifacts:
        kinds.append("attention")
    return kinds


def plot_tsne(results, artifacts, path, max_points=1500, seed=0, classes=None, dpi=None):
    """t-SNE of the run's saved features (``classes``: draw that many classes only, chosen with
    ``seed``); returns {kind: points drawn}."""
    if not artifacts or "features" not in artifacts:
        raise ZSLError("plot tsne: the run has no features.pt with features (train with --save-features "
                       "or --plots; only generative methods save them)")
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ZSLError('plot tsne needs scikit-learn: pip install "zslfast[plots]"') from None
    plt = _pyplot()
    groups = artifacts["features"]
    g = torch.Generator().manual_seed(seed)
    if classes is not None:
        present = torch.unique(torch.cat([v["y"] for v in groups.values()]))
        chosen = present[torch.randperm(present.numel(), generator=g)[:classes]].sort().values
        groups = {k: {"x": v["x"][torch.isin(v["y"], chosen)], "y": v["y"][torch.isin(v["y"], chosen)]}
                  for k, v in groups.items()}
        colour = {int(c): i for i, c in enumerate(chosen)}  # distinct colours (tab20 has 20)
    total = sum(v["y"].numel() for v in groups.values())
    share = min(1.0, max_points / total)
    xs, ys, kinds = [], [], []
    for kind, v in groups.items():
        n = v["y"].numel()
        keep = torch.randperm(n, generator=g)[:max(1, int(round(share * n)))].sort().values
        xs.append(v["x"][keep])
        ys.append(v["y"][keep])
        kinds += [kind] * keep.numel()
    x = torch.cat(xs).double().numpy()
    y = torch.cat(ys).numpy()
    emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (len(x) - 1) / 3)).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 6))
    markers = {"real_seen": ("o", 10), "real_unseen": ("^", 14), "synthetic_unseen": ("x", 14)}
    counts = {}
    shade = (lambda labels: [colour[int(c)] % 20 for c in labels]) if classes is not None else (lambda labels: labels % 20)
    for kind, (marker, size) in markers.items():
        sel = [i for i, k in enumerate(kinds) if k == kind]
        counts[kind] = len(sel)
        if sel:
            ax.scatter(emb[sel, 0], emb[sel, 1], c=shade(y[sel]), cmap="tab20", vmin=0, vmax=19, marker=marker,
                       s=size, linewidths=0.8, label=f"{kind.replace('_', ' ')} ({len(sel)})")
    # the legend beside the points, never over them
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    shown = f"{classes} classes" if classes is not None else "colour = class"
    ax.set_title(f"t-SNE: {results['method']} on {results['dataset']} ({shown})", fontsize=10)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path, dpi)
    plt.close(fig)
    return counts


def chosen_epoch(results, scored):
    """The epoch a selection choice picked among a stage's scored epochs: the choice whose history
    is exactly this stage's [(epoch, score)] list (None when the stage was not a selection run)."""
    for choice in results["selection"]["choices"].values():
        if [tuple(h) for h in choice.get("history") or []] == scored:
            return choice["value"]
    return None


def plot_curves(results, path, max_panels=12, dpi=None):
    """One panel per stage (the first ``max_panels``); returns {"panels": n, "stages": [...],
    "chosen_marked": n, "xticks": the first panel's epoch ticks}."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    history = results.get("history") or {}
    stages = list(history)[:max_panels]
    if not stages:
        raise ZSLError("plot curves: the run recorded no training curves (non-iterative method)")
    cols = min(3, len(stages))
    rows = -(-len(stages) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    marked = 0
    for ax, stage in zip(axes.flat, stages):
        records = history[stage]
        epochs = [r["epoch"] for r in records]
        for name in records[0].get("loss", {}):
            ax.plot(epochs, [r["loss"][name] for r in records], label=name, lw=1.2)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss (epoch mean)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.tick_params(labelsize=7)
        if records[0].get("loss"):
            ax.legend(fontsize=6, loc="best")
        scored = [(r["epoch"], r["score"]) for r in records if "score" in r]
        if scored:
            twin = ax.twinx()
            twin.plot(*zip(*scored), "k.--", lw=0.8, label="score")
            twin.set_ylabel("evaluation score", fontsize=8)
            twin.tick_params(labelsize=7)
            epoch = chosen_epoch(results, scored)
            if epoch is not None:
                ax.axvline(epoch, color="red", lw=1, alpha=0.6)
                marked += 1
    for ax in list(axes.flat)[len(stages):]:
        ax.axis("off")
    fig.suptitle(f"{results['method']} on {results['dataset']}: training curves (red: chosen epoch)", fontsize=10)
    fig.tight_layout()
    lo, hi = axes.flat[0].get_xlim()
    ticks = [float(t) for t in axes.flat[0].get_xticks() if lo <= t <= hi]
    _save(fig, path, dpi)
    plt.close(fig)
    return {"panels": len(stages), "stages": stages, "chosen_marked": marked, "xticks": ticks}


def plot_tasks(results, path, dpi=None):
    """S / U / H per task of a continual run; returns {"tasks": n}."""
    plt = _pyplot()
    per_task = results.get("per_task")
    if not per_task:
        raise ZSLError("plot tasks: the run has no per-task metrics (continual methods only)")
    tasks = [t["task"] for t in per_task]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key, style in (("S", "o-"), ("U", "^-"), ("H", "s-")):
        ax.plot(tasks, [t[key] for t in per_task], style, label=key)
    ax.set_xlabel("task")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(tasks)
    ax.legend()
    ax.set_title(f"{results['method']} on {results['dataset']}: per task", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)
    plt.close(fig)
    return {"tasks": len(tasks)}


def plot_seen_unseen(runs, path, dpi=None):
    """The seen–unseen curves of ``runs`` (results dicts) on one axes, each run's operating point
    marked; returns {"curves": n, "ausuc": [area per run], "points": [points per curve]}."""
    missing = [r.get("_dir", r["method"]) for r in runs if not r.get("seen_unseen")]
    if missing:
        raise ZSLError(f"plot seen-unseen: {', '.join(missing)} has no seen-unseen curve in results.json (written by "
                       "every GZSL run; continual runs have none)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    areas, points = [], []
    for r in runs:
        c = r["seen_unseen"]
        label = f"{r.get('_label') or r['method']} (AUSUC {c['ausuc']:.1f})"
        line, = ax.plot(c["S"], c["U"], "-", label=label)
        ax.plot([c["at_run"]["S"]], [c["at_run"]["U"]], "o", color=line.get_color(), ms=5)
        areas.append(c["ausuc"])
        points.append(len(c["S"]))
    ax.set_xlabel("seen accuracy S (%)")
    ax.set_ylabel("unseen accuracy U (%)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="lower left", title="dot: the run's own calibration", title_fontsize=7)  # the corner under every curve holds no data
    first = runs[0]
    ax.set_title(f"seen-unseen curve on {first['dataset']}" if len({r['dataset'] for r in runs}) == 1
                 else "seen-unseen curves", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)
    plt.close(fig)
    return {"curves": len(runs), "ausuc": areas, "points": points}


def plot_attention(results, artifacts, path, dpi=None):
    """Attention maps of a few images × attributes; returns {"panels": n, "footprints": n drawn}."""
    if not artifacts or "attention" not in artifacts:
        raise ZSLError("plot attention: the run has no attention maps in features.pt (SC-EGG with --save-features)")
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    a = artifacts["attention"]
    maps, (h, w) = a["maps"], a["grid"]
    n, k = maps.shape[:2]
    fig, axes = plt.subplots(n, k, figsize=(2.2 * k, 2.2 * n), squeeze=False)
    drawn = 0
    for i in range(n):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(maps[i, j].reshape(h, w).numpy(), cmap="viridis", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"img {int(a['images'][i])} (class {int(a['labels'][i])})\nattribute {int(a['attributes'][i, j])}",
                         fontsize=7)
            if a.get("footprints") is not None:
                for key, style in (("region", "-"), ("neighbour", "--")):
                    r = int(a["footprints"][key][i, j])
                    if r >= 0:
                        ax.add_patch(Rectangle((r % w - 0.5, r // w - 0.5), 1, 1, fill=False, ec="red", lw=1.5, ls=style))
                        drawn += 1
    fig.suptitle("SC-EGG attention (red: planted footprint)", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi)
    plt.close(fig)
    return {"panels": n * k, "footprints": drawn}


def plot(kind, run_dir, out=None, max_points=1500, dpi=None, classes=None):
    """Draw plot ``kind`` of the run in ``run_dir`` to ``out`` (default ``run_dir/plots/KIND.png``;
    its extension picks PNG, PDF or SVG); returns (path, what was drawn). ``seen-unseen`` also takes
    a list of run folders (one curve each; default file: the first's)."""
    if kind not in KINDS:
        raise ZSLError(f"plot kind {kind!r}: choose from {', '.join(KINDS)}")
    run_dirs = [run_dir] if isinstance(run_dir, (str, os.PathLike)) else list(run_dir)
    if len(run_dirs) != 1 and kind != "seen-unseen":
        raise ZSLError(f"plot {kind}: one RUN_DIR (several are for seen-unseen)")
    run_dir = run_dirs[0]
    out = out or os.path.join(run_dir, "plots", f"{kind}.png")
    plot_format(out)  # before any work
    if dpi is not None and not 10 <= dpi <= 2400:
        raise ZSLError(f"plot --dpi {dpi}: expected 10 to 2400")
    if classes is not None and classes < 1:
        raise ZSLError(f"plot --classes {classes}: expected at least 1")
    results, artifacts = load_run(run_dir)
    if kind == "tsne":
        drawn = plot_tsne(results, artifacts, out, max_points, classes=classes, dpi=dpi)
    elif kind == "curves":
        drawn = plot_curves(results, out, dpi=dpi)
    elif kind == "tasks":
        drawn = plot_tasks(results, out, dpi=dpi)
    elif kind == "seen-unseen":
        runs = [results] + [load_run(d)[0] for d in run_dirs[1:]]
        for r, d in zip(runs, run_dirs):
            r["_dir"] = d
            r["_label"] = r["method"] + (f" [{r['variant']}]" if r.get("variant") else "")
        drawn = plot_seen_unseen(runs, out, dpi=dpi)
    else:
        drawn = plot_attention(results, artifacts, out, dpi=dpi)
    return out, drawn


def plot_all(run_dir):
    """Every applicable plot of a run into ``run_dir/plots/``; returns {kind: (path, drawn)}."""
    results, artifacts = load_run(run_dir)
    return {kind: plot(kind, run_dir) for kind in applicable(results, artifacts)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS + ("all",))
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+", help="a run folder (seen-unseen: one or more)")
    p.add_argument("--out", help="the file: .png, .pdf or .svg (default RUN_DIR/plots/KIND.png)")
    p.add_argument("--dpi", type=int, help=f"resolution of PNG files (default {DPI})")
    p.add_argument("--max-points", type=int, default=1500, help="t-SNE: points drawn at most (default 1500)")
    p.add_argument("--classes", type=int, help="t-SNE: draw this many classes only (seeded), e.g. 10")
    args = p.parse_args(argv)

    def body():
        if args.kind == "all" and len(args.run_dir) > 1:
            raise ZSLError("plot all: one RUN_DIR")
        done = plot_all(args.run_dir[0]) if args.kind == "all" else {args.kind: plot(args.kind, args.run_dir, args.out,
                                                                                  args.max_points, args.dpi,
                                                                                  args.classes)}
        for kind, (path, drawn) in done.items():
            print(f"wrote {path}: {drawn}")

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
