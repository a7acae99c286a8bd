"""Atomic output files: written to a temporary name in the same folder, then renamed, so a crash or
a full disk never leaves a truncated results file or checkpoint behind."""
import json
import os
import tempfile

import torch

from zslfast.errors import ZSLError


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n"))


def write_atomic_text(path, text):
    """Write the string ``text`` to ``path`` atomically (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path, obj):
    """torch.save ``obj`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def check_writable(folder, what="--out"):
    """Create ``folder`` and prove that a file can be written in it, so an unwritable output folder
    is refused before training rather than discovered when the results are saved."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".zslfast-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ZSLError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from None
