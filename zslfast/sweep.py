"""Every method on one dataset, over seeds, and one comparison table: the toolkit's main job.

    python -m zslfast.sweep [--methods eszsl,gsmflow,...] [--seeds 0] [--full] [--like NAME]
                            [--out runs/sweep] [--device DEV] [--select-on-test]

Each entry of :data:`ENTRIES` (every method, CVC's transductive setting, and ESZSL and TF-VAEGAN on
SC-EGG's images globally pooled) is trained through
``python -m zslfast.train`` with ``--seeds`` into ``<out>/<entry>/`` (per-seed folders and a
summary), on the built-in synthetic data (or ``--like NAME``) at the ``--quick`` budget unless
``--full`` is given; then :mod:`zslfast.report` prints the table of all of them and writes
``<out>/table.md`` and ``<out>/table.csv``. A bad setting or data problem in any entry is reported
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
    p.add_argument("--methods", help=f"comma-separated entries (default: all of {', '.join(n for n, _ in ENTRIES)})")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    p.add_argument("--full", action="store_true", help="each method's full synthetic budget instead of --quick")
    p.add_argument("--like", help="synthetic data shaped like a real dataset (see python -m zslfast.train --help)")
    p.add_argument("--out", help="output folder (default runs/sweep, or the first free runs/sweep-2, -3 when that "
                                 "holds runs); a folder holding runs is refused")
    p.add_argument("--overwrite", action="store_true", help="replace the runs already in --out")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--select-on-test", action="store_true", help="the original papers' protocol, for every method")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def selected_entries(spec):
    """The ENTRIES named in ``--methods`` (all when None), with one error naming unknown ones."""
    if spec is None:
        return list(ENTRIES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    known = dict(ENTRIES)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ZSLError(f"--methods: unknown entr{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or '(none)'}; "
                       f"choose from {', '.join(known)}")
    return [(n, known[n]) for n in names]


def train_args(args, entry_args, out):
    """The training command line of one entry."""
    extra = ([] if args.full else ["--quick"]) + (["--like", args.like] if args.like else [])
    extra += ["--select-on-test"] if args.select_on_test else []
    extra += ["--no-progress"] if args.no_progress else []
    extra += ["--overwrite"] if args.overwrite else []
    return [*entry_args, *extra, "--seeds", args.seeds, "--device", args.device, "--out", out]


def sweep(args):
    """Run the selected entries and print / write the comparison table; returns the report's table."""
    from zslfast import report, runfolder, train

    entries = selected_entries(args.methods)
    if args.out is None:  # like the training command's default folder: never refused, never overwritten
        args.out = runfolder.free_folder(os.path.join("runs", "sweep"), [name for name, _ in entries])
        print(f"[zslfast.sweep] writing to {args.out}", file=sys.stderr)
    parser = train.build_parser()
    # Every entry's settings are resolved (and refused) before the first one trains.
    commands = []
    for name, entry_args in entries:
        targs = parser.parse_args(train_args(args, entry_args, os.path.join(args.out, name)))
        if targs.select_on_test and "test" not in train.method_class(targs.method).selection_modes:
            targs.select_on_test = False  # a method without selection (GRW) runs its fixed protocol
        train.resolve_config(targs.method, targs.dataset, targs.config, targs.set, targs.quick, like=targs.like)
        taken = runfolder.holds_run(targs.out)
        if taken and not args.overwrite:
            raise ZSLError(f"--out {args.out}: {name} there holds a run ({', '.join(taken)}); choose another --out, or "
                           "pass --overwrite to replace the sweep's runs")
        commands.append((name, targs))
    for name, targs in commands:
        print(f"[zslfast.sweep] {name}: python -m zslfast.train {' '.join(train_args(args, dict(entries)[name], targs.out))}",
              file=sys.stderr)
        train.run(targs)
    print()
    return report.report([os.path.join(args.out, name) for name, _ in commands],
                         md=os.path.join(args.out, "table.md"), csv_path=os.path.join(args.out, "table.csv"))


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli(lambda: sweep(args))


if __name__ == "__main__":
    sys.exit(main())
