"""The error zslfast raises for bad input: data files, splits, configuration."""


class ZSLError(ValueError):
    """Bad input to zslfast (a data file, a split, a configuration value).

    The message names the file or setting and the problem. The training CLI turns it into a one-line
    message and exit code 2; it is always raised before any training starts.
    """


def run_cli(body):
    """Run a command-line entry point's ``body()``: a ZSLError becomes one ``zslfast: error: ...`` line
    on stderr and exit code 2; otherwise ``body``'s return value if it is an int, else 0."""
    import sys

    try:
        rc = body()
    except ZSLError as exc:
        print(f"zslfast: error: {exc}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0
