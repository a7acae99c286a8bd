"""``python -m zslfast.data check DIR [DIR ...]``: validate dataset folders (see zslfast.data.check)."""
import argparse
import sys

from zslfast.errors import run_cli


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="validate dataset folders and print a summary of each")
    c.add_argument("folders", nargs="+", metavar="DIR")
    args = p.parse_args(argv)

    def body():
        from zslfast.data.check import check_folder

        for folder in args.folders:
            print(check_folder(folder))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
