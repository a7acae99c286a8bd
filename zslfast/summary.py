"""Several seeds of one configuration, summarised: ``summary.json`` and ``summary.md`` beside the
per-seed run folders written by ``python -m zslfast.train ... --seeds 0,1,2``.

Every metric is reported as mean, sample standard deviation (n − 1; 0 for a single seed) and n, with
the selection protocol, the semantic embedding and the config hash, so that a table built from the
summary says how its numbers were obtained. Runs are only summarised together when they share their
method, dataset, selection protocol and config (the hash): anything else is refused, because a mean
over different configurations is not a result.
"""
import hashlib
import json
import math
import os

from zslfast.errors import ZSLError
from zslfast.io import write_atomic_text, write_json

# The metrics of each kind of setting, in the order the field's tables use.
ZSL_METRICS = ("zsl_t1", "gzsl_u", "gzsl_s", "gzsl_h")
CONTINUAL_METRICS = ("mSA", "mUA", "mH")
LABELS = {"zsl_t1": "T1", "gzsl_u": "U", "gzsl_s": "S", "gzsl_h": "H", "mSA": "mSA", "mUA": "mUA", "mH": "mH"}


def config_hash(config):
    """A short, stable hash of a resolved configuration (canonical JSON: sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def mean_std(values):
    """(mean, sample std, n) of a list of numbers; std is 0 for one value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def metric_names(results):
    """The headline metrics of one results.json: the continual ones for continual methods."""
    metrics = results["metrics"]
    names = CONTINUAL_METRICS if all(k in metrics for k in CONTINUAL_METRICS) else ZSL_METRICS
    return [k for k in names if k in metrics]


def describe(results):
    """The identity of a run, beyond its seed: what a table row and column say about it."""
    return {"method": results["method"], "dataset": results["dataset"], "setting": results["setting"],
            "variant": results.get("variant", ""), "selection": results["selection"]["on"],
            "embedding": results.get("embedding", "att"), "config_hash": config_hash(results["config"])}


def summarize(runs):
    """The summary of several results.json dicts of one configuration (see the module docstring)."""
    if not runs:
        raise ZSLError("summary: no runs to summarise")
    ident = describe(runs[0])
    for r in runs[1:]:
        other = describe(r)
        if other != ident:
            diff = ", ".join(f"{k} {ident[k]!r} vs {other[k]!r}" for k in ident if ident[k] != other[k])
            raise ZSLError(f"summary: runs of different configurations cannot be averaged ({diff})")
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ZSLError(f"summary: a seed appears twice ({seeds})")
    metrics = {}
    for name in runs[0]["metrics"]:
        values = [r["metrics"][name] for r in runs if isinstance(r["metrics"].get(name), (int, float))]
        if len(values) == len(runs):
            mean, std, n = mean_std(values)
            metrics[name] = {"mean": mean, "std": std, "n": n, "values": values}
    return {**ident, "seeds": seeds, "headline": metric_names(runs[0]), "metrics": metrics,
            "run_s": _mean_time(runs)}


def _mean_time(runs):
    """The mean run time in seconds, None when a run does not record it (results written by hand)."""
    times = [(r.get("timings") or {}).get("total_s") for r in runs]
    return mean_std(times)[0] if all(isinstance(t, (int, float)) for t in times) else None


def format_mean_std(entry, digits=1):
    """'m ± s' (or just 'm' for a single run)."""
    if entry["n"] == 1:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def summary_markdown(summary):
    """summary.md: one table of the headline metrics, then every other metric, and how they were chosen."""
    heads = summary["headline"]
    lines = [f"# {summary['method']}{' ' + summary['variant'] if summary['variant'] else ''} on {summary['dataset']}",
             "",
             f"seeds {', '.join(map(str, summary['seeds']))} (n = {len(summary['seeds'])}); selection: "
             f"{summary['selection']}; embedding: {summary['embedding']}; config {summary['config_hash']}; "
             "mean ± sample std",
             "",
             "| " + " | ".join(LABELS.get(h, h) for h in heads) + " |",
             "|" + "---:|" * len(heads),
             "| " + " | ".join(format_mean_std(summary["metrics"][h]) for h in heads) + " |"]
    rest = [k for k in summary["metrics"] if k not in heads]
    if rest:
        lines += ["", "Other metrics:", ""] + [f"- {k}: {format_mean_std(summary['metrics'][k])}" for k in rest]
    return "\n".join(lines) + "\n"


def write_summary(out, runs):
    """Write ``out/summary.json`` and ``out/summary.md`` (atomically); returns the summary."""
    summary = summarize(runs)
    write_json(os.path.join(out, "summary.json"), summary)
    write_atomic_text(os.path.join(out, "summary.md"), summary_markdown(summary))
    return summary
