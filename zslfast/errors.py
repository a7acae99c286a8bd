"""The error zslfast raises for bad input: data files, splits, configuration."""


class ZSLError(ValueError):
    """Bad input to zslfast (a data file, a split, a configuration value).

    The message names the file or setting and the problem. The training CLI turns it into a one-line
    message and exit code 2; it is always raised before any training starts.
    """
