"""The error zslfast raises for bad input: data files, splits, configuration."""


class ZSLError(ValueError):
    """Bad input to zslfast (a data file, a split, a configuration value).

    The message names the file or setting and the problem. The training CLI turns it into a one-line
    message and exit code 2; it is always raised before any training starts.
    """


class RunFailed(RuntimeError):
    """A run that started could not finish as it should: its outputs could not be written, its
    training diverged, a rank of a distributed job died. The message is one line naming what, where
    and what is kept (exit code 1 from the command line)."""


class Diverged(RunFailed):
    """A loss or a metric became NaN/inf: the run stopped at that stage and epoch. ``checkpoint``
    (set by the run, which knows it) describes the last good checkpoint kept, or None."""

    def __init__(self, stage, epoch, what, checkpoint=None):
        super().__init__(stage, epoch, what)
        self.stage, self.epoch, self.what, self.checkpoint = stage, epoch, what, checkpoint

    def __str__(self):
        where = f"in epoch {self.epoch} of stage {self.stage!r}" if self.epoch is not None else f"in {self.stage}"
        kept = (f"the last good checkpoint is kept: {self.checkpoint}" if self.checkpoint else
                "no checkpoint had been written")
        return (f"the run diverged {where}: {self.what} is NaN/inf (usually a learning rate too high for this "
                f"data: try a smaller one with --set); {kept}")


def run_cli(body):
    """Run a command-line entry point's ``body()``: a ZSLError becomes one ``zslfast: error: ...`` line
    on stderr and exit code 2, a :class:`RunFailed` one such line and exit code 1; otherwise ``body``'s return value if it is an int, else 0.

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
    except RunFailed as exc:
        print(f"zslfast: error: {where}{exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not launched:
            raise
        if os.environ.get("ZSLFAST_TRACEBACK"):
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"zslfast: error: {where}{type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0
