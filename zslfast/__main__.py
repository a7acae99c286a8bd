"""``zslfast`` (or ``python -m zslfast``): the package's commands under one name.

    zslfast train --method gsmflow ...     # the same as python -m zslfast.train --method gsmflow ...
    zslfast --version
    zslfast                                 # lists the commands

Each subcommand is the module of the same name (``python -m zslfast.<module>`` works too; ``--help``
on any of them gives its options), run with the rest of the arguments.
"""
import importlib
import sys

# (subcommand, module, what it does)
COMMANDS = (
    ("train", "zslfast.train", "train and evaluate one method on one dataset (one seed, or --seeds with a summary)"),
    ("sweep", "zslfast.sweep", "the main job: every method on one dataset over seeds, and one comparison table"),
    ("predict", "zslfast.predict", "predict with a trained run: class ids and names of new features (CSV)"),
    ("report", "zslfast.report", "one table (Markdown / CSV) from any set of run folders"),
    ("plot", "zslfast.plot", "plots of a finished run (training curves, feature t-SNE, attention maps)"),
    ("data", "zslfast.data.__main__", "data tools: check dataset folders, region files, extract region features"),
    ("golden", "zslfast.golden", "record / check the golden results that pin every method's numbers"),
)


def version_line() -> str:
    """``zslfast X (torch Y, extension: ...)``: what ``--version`` prints."""
    import torch

    import zslfast
    from zslfast import ops

    info = ops.extension_info()
    built = "compiled" if info.get("cpu") else f"not built, pure-PyTorch fallback ({info.get('load_error') or 'absent'})"
    return f"zslfast {zslfast.__version__} (torch {torch.__version__}, extension: {built})"


def main(argv=None) -> int:
    """Run ``zslfast SUBCOMMAND ARGS...``; returns the subcommand's exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: zslfast SUBCOMMAND [ARGS...]   (zslfast SUBCOMMAND --help for its options; zslfast --version)")
        for name, module, what in COMMANDS:
            print(f"  {name:<8} {what}  (python -m {module.removesuffix('.__main__')})")
        return 0
    if argv[0] in ("-V", "--version"):
        print(version_line())
        return 0
    modules = {name: module for name, module, _ in COMMANDS}
    if argv[0] not in modules:
        print(f"zslfast: error: unknown command {argv[0]!r}; choose from {', '.join(modules)}", file=sys.stderr)
        return 2
    return importlib.import_module(modules[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
