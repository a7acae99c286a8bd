"""Every method on one dataset, over seeds, and one comparison table: the toolkit's main job.

    python -m zslfast.sweep [--methods eszsl,gsmflow,...] [--seeds 0] [--quick] [--like NAME]
                            [--dataset NAME --data-root DIR] [--set KEY=VALUE ...] [--grid KEY=V1,V2,...]
                            [--out runs/sweep] [--device DEV] [--select-on-test]

Each entry of :data:`ENTRIES` (every method, CVC's transductive setting, and ESZSL on SC-EGG's
images globally pooled; TF-VAEGAN on them too when ``--methods`` names it) is trained through
``python -m zslfast.train`` with ``--seeds`` into ``<out>/<entry>/`` (per-seed folders and a
summary), on the built-in synthetic data (or ``--like NAME``, or a real or own dataset with
``--dataset NAME --data-root DIR``) at each method's default budget for that data (``--quick``: the
smoke-test budget); ``--set``
applies to every entry, and ``--grid KEY=V1,V2,...`` runs every entry once per value (into
``<out>/<entry>/KEY=V/``; the values are rows of the table, their variant names them). Then
:mod:`zslfast.report` prints the table of all of them and writes ``<out>/table.md``,
``<out>/table.csv`` and ``<out>/table.tex``. A bad setting or data problem in any entry is reported
before that entry trains, with the training command's one-line error.
"""
import argparse
import os
import sys

from zslfast.errors import ZSLError, run_cli

# (entry name, training-CLI arguments)
ENTRIES = [
    ("eszsl", ["--method", "eszsl"]),
    ("gsmflow", ["--method", "gsmflow"]),
    ("grw", ["--method", "grw"]),
    ("cvc", ["--method", "cvc"]),
    ("cvc_transductive", ["--method", "cvc", "--set", "transductive=true"]),
    ("scegg", ["--method", "scegg"]),
    ("tfvaegan", ["--method", "tfvaegan"]),
    ("clswgan", ["--method", "clswgan"]),
    ("eszsl_pooled_regions", ["--method", "eszsl", "--pooled-regions"]),  # SC-EGG's images, globally pooled
    ("tfvaegan_pooled_regions", ["--method", "tfvaegan", "--pooled-regions"]),  # SC-EGG's stage 3 without attention
]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m zslfast.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", help="comma-separated entries (default: all of "
                                     f"{', '.join(n for n, _ in ENTRIES if n not in OPTIONAL)}; also "
                                     f"{', '.join(sorted(OPTIONAL))})")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    p.add_argument("--quick", action="store_true", help="each method's quick (smoke-test) budget instead of its default "
                                                       "for the data")
    p.add_argument("--like", help="synthetic data shaped like a real dataset (see python -m zslfast.train --help)")
    p.add_argument("--dataset", help="a benchmark or own dataset under --data-root instead of synthetic data")
    p.add_argument("--data-root", help="the folder holding --dataset's folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting for every entry")
    p.add_argument("--grid", metavar="KEY=V1,V2,...", help="run every entry once per value of one setting")
    p.add_argument("--out", help="output folder (default runs/sweep, or the first free runs/sweep-2, -3 when that "
                                 "holds runs); a folder holding runs is refused")
    p.add_argument("--overwrite", action="store_true", help="replace the runs already in --out")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--select-on-test", action="store_true", help="the original papers' protocol, for every method")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


# Entries the main job leaves out unless ``--methods`` names them, to stay within its 5 minutes:
# inductive CVC, whose model and numbers the transductive run reports too (the report shows them as
# the row "transductive=true, inductive stage"), and an ablation of ~50 s (TF-VAEGAN on SC-EGG's
# pooled images; its numbers: docs/methods/gan_baselines.md).
OPTIONAL = {"cvc", "tfvaegan_pooled_regions"}


def selected_entries(spec):
    """The ENTRIES named in ``--methods`` (when None: all but :data:`OPTIONAL`), with one error
    naming unknown ones."""
    if spec is None:
        return [(n, a) for n, a in ENTRIES if n not in OPTIONAL]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    known = dict(ENTRIES)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ZSLError(f"--methods: unknown entr{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or '(none)'}; "
                       f"choose from {', '.join(known)}")
    return [(n, known[n]) for n in names]


def train_args(args, entry_args, out):
    """The training command line of one entry."""
    extra = (["--quick"] if args.quick else []) + (["--like", args.like] if args.like else [])
    extra += ["--select-on-test"] if args.select_on_test else []
    extra += ["--no-progress"] if args.no_progress else []
    extra += ["--overwrite"] if args.overwrite else []
    extra += ["--dataset", args.dataset] if args.dataset else []
    extra += ["--data-root", args.data_root] if args.data_root else []
    for item in args.set:
        extra += ["--set", item]
    return [*entry_args, *extra, "--seeds", args.seeds, "--device", args.device, "--out", out]


def grid_values(spec):
    """(key, [values]) of ``--grid KEY=V1,V2,...`` (None: no grid), one clear error when malformed."""
    if spec is None:
        return None
    key, sep, values = spec.partition("=")
    values = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not values or len(set(values)) != len(values):
        raise ZSLError(f"--grid {spec!r}: expected KEY=V1,V2,... with distinct values, e.g. --grid lr=1e-4,1e-3")
    return key.strip(), values


def sweep(args):
    """Run the selected entries and print / write the comparison table; returns the report's table."""
    from zslfast import report, runfolder, train

    entries = selected_entries(args.methods)
    grid = grid_values(args.grid)
    # (table name, training arguments, folder under --out) of every run
    planned = [(name, entry_args, name) for name, entry_args in entries] if grid is None else \
        [(f"{name}[{grid[0]}={v}]", [*entry_args, "--set", f"{grid[0]}={v}"], os.path.join(name, f"{grid[0]}={v}"))
         for name, entry_args in entries for v in grid[1]]
    if args.out is None:  # like the training command's default folder: never refused, never overwritten
        args.out = runfolder.free_folder(os.path.join("runs", "sweep"), [sub for _, _, sub in planned])
        print(f"[zslfast.sweep] writing to {args.out}", file=sys.stderr)
    parser = train.build_parser()
    # Every entry's settings are resolved (and refused) before the first one trains.
    commands = []
    runs = [(name, entry_args, os.path.join(args.out, sub)) for name, entry_args, sub in planned]
    for name, entry_args, entry_out in runs:
        targs = parser.parse_args(train_args(args, entry_args, entry_out))
        if targs.select_on_test and "test" not in train.method_class(targs.method).selection_modes:
            targs.select_on_test = False  # a method without selection (GRW) runs its fixed protocol
        train.resolve_config(targs.method, targs.dataset, targs.config, targs.set, targs.quick, like=targs.like)
        taken = runfolder.holds_run(targs.out)
        if taken and not args.overwrite:
            raise ZSLError(f"--out {args.out}: {name} there holds a run ({', '.join(taken)}); choose another --out, or "
                           "pass --overwrite to replace the sweep's runs")
        commands.append((name, targs))
    arguments = {name: entry_args for name, entry_args, _ in runs}
    for name, targs in commands:
        print(f"[zslfast.sweep] {name}: python -m zslfast.train {' '.join(train_args(args, arguments[name], targs.out))}",
              file=sys.stderr)
        train.run(targs)
    print()
    return report.report([targs.out for _, targs in commands], md=os.path.join(args.out, "table.md"),
                         csv_path=os.path.join(args.out, "table.csv"), latex=os.path.join(args.out, "table.tex"))


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: sweep(args))


if __name__ == "__main__":
    sys.exit(main())
