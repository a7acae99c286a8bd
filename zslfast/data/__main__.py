"""``python -m zslfast.data COMMAND ...``: the data tools, in one place.

- ``check DIR [DIR ...]``: validate dataset folders and print a summary of each (:mod:`zslfast.data.check`);
- ``download xlsa17 --to DIR``: the benchmark features and splits, checked and unpacked (:mod:`zslfast.data.download`);
- ``describe``: a dataset's ``att_splits.mat`` from a class CSV and an image list (:mod:`zslfast.data.describe`);
- ``extract``: region features (and pooled features) from images (:mod:`zslfast.data.extract`);
- ``regions repack | info``: region feature files (:mod:`zslfast.data.regions`);
- ``synthetic``, ``synthetic-regions``: write synthetic data in xlsa17 / SC-EGG layout
  (:mod:`zslfast.data.synthetic`, :mod:`zslfast.data.synthetic_regions`).

``python -m zslfast.data COMMAND --help`` gives a command's options.
"""
import argparse
import importlib
import sys

from zslfast.errors import ZSLError, run_cli

# command: (module whose main(argv) runs it, what it does)
TOOLS = {
    "download": ("zslfast.data.download", "download, check and unpack the xlsa17 benchmark data"),
    "describe": ("zslfast.data.describe", "write a dataset's att_splits.mat from a class CSV and an image list"),
    "extract": ("zslfast.data.extract", "extract region features (and pooled features) from images"),
    "regions": ("zslfast.data.regions", "region feature files: repack (streamable chunks), info (validate)"),
    "synthetic": ("zslfast.data.synthetic", "write a synthetic dataset in xlsa17 format"),
    "synthetic-regions": ("zslfast.data.synthetic_regions", "write synthetic region features (SC-EGG's layout)"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        return importlib.import_module(TOOLS[argv[0]][0]).main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m zslfast.data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate dataset folders and print a summary of each")
    c.add_argument("folders", nargs="+", metavar="DIR")
    c.add_argument("--features", metavar="FILE", help="features replacing DIR/res101.mat, as python -m zslfast.train "
                                                      "--features reads them")
    c.add_argument("--labels", metavar="FILE", help="their class ids, as python -m zslfast.train --labels")
    for name, (_, what) in TOOLS.items():  # listed for --help; run above, with their own options
        sub.add_parser(name, help=what, add_help=False)
    args = p.parse_args(argv)

    def body():
        from zslfast.data.check import check_folder

        if (args.features or args.labels) and len(args.folders) > 1:
            raise ZSLError("data check --features/--labels: one DIR")
        if args.labels and not args.features:
            raise ZSLError("data check --labels goes with --features (res101.mat holds its own labels)")
        for folder in args.folders:
            print(check_folder(folder, args.features, args.labels))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
