"""The error zslfast raises for bad input: data files, splits, configuration."""


class ZSLError(ValueError):
    """Bad input to zslfast (a data file, a split, a configuration value).

    The message names the file or setting and the problem. The training CLI turns it into a one-line
    message and exit code 2; it is always raised before any training starts.
    """


def run_cli(body):
    """Run a command-line entry point's ``body()``: a ZSLError becomes one ``zslfast: error: ...`` line
    on stderr and exit code 2; otherwise ``body``'s return value if it is an int, else 0.

    In one process of a distributed launch (``torchrun``, ``WORLD_SIZE`` > 1) the line names the
    rank, and any other exception also becomes one line (exit code 1) instead of a traceback per
    rank; ``ZSLFAST_TRACEBACK=1`` prints the traceback as well."""
    import os
    import sys
    import traceback

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    where = f"rank {os.environ.get('RANK', '?')}: " if launched else ""
    try:
        rc = body()
    except ZSLError as exc:
        print(f"zslfast: error: {where}{exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not launched:
            raise
        if os.environ.get("ZSLFAST_TRACEBACK"):
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"zslfast: error: {where}{type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0
