"""Output files zslfast writes and reads back.

- Atomic writes: a file is written to a hidden temporary name in the same folder
  (``.NAME.<random>.tmp``), flushed to disk, then renamed, so a crash or a full disk never leaves a
  truncated results file or checkpoint behind. A temporary file left by a killed process is removed
  by the next run in that folder (:func:`remove_stale_temporaries`).
- Checksums: every torch file zslfast writes (``resume.pt``, ``checkpoint.pt``, ``model.pt``,
  ``features.pt``) carries a SHA-256 of its content (:func:`content_hash`: every tensor's bytes,
  dtype and shape and every value, in order), checked by :func:`load_checked` on every read, so a
  file changed on disk (a bit flip, bytes overwritten inside a tensor) is refused with one line
  instead of silently resuming or predicting from wrong weights. The hash covers the content rather
  than the file's bytes because the zip container torch writes is not byte-for-byte deterministic.
"""
import glob
import hashlib
import json
import os
import tempfile

import torch

from zslfast.errors import ZSLError


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    if os.path.isdir(path):
        raise ZSLError(f"{path}: is a folder; expected the name of a file to write")
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


CHECKSUM_KEY = "zslfast_sha256"
TEMP_PATTERN = ".*.*.tmp"  # atomic_write's temporary names: "." + file name + "." + random + ".tmp"


def file_hash(path):
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(obj):
    """SHA-256 hex digest of a checkpoint's content: nested dicts / lists / tuples of tensors and plain
    values (what ``torch.load(..., weights_only=True)`` returns), walked in order; a tensor counts with
    its dtype, shape and bytes, so any changed value, key or shape changes the digest."""
    h = hashlib.sha256()

    def walk(v):
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k, item in v.items():
                walk(k)
                walk(item)
        elif isinstance(v, (list, tuple)) and not isinstance(v, torch.Size):
            h.update(f"{'L' if isinstance(v, list) else 'U'}{len(v)}".encode())
            for item in v:
                walk(item)
        elif isinstance(v, bytes):
            h.update(b"B%d" % len(v) + v)
        else:  # str, int, float, bool, None, torch.dtype / torch.Size / torch.device: a stable repr
            text = repr(v)
            h.update(f"V{type(v).__name__}{len(text)}:{text}".encode())

    walk(obj)
    return h.hexdigest()


def save_checkpoint(path, obj):
    """torch.save the dict ``obj`` to ``path`` atomically, with its :func:`content_hash` under
    ``CHECKSUM_KEY`` (read it back with :func:`load_checked`)."""
    record = dict(obj)
    record[CHECKSUM_KEY] = content_hash(obj)
    atomic_write(path, lambda f: torch.save(record, f))


def load_checked(path, what):
    """The dict that :func:`save_checkpoint` wrote to ``path``, its checksum verified (and removed).

    Every way the file can be wrong is one :class:`ZSLError` naming ``what`` (e.g. ``--resume``) and
    the file: missing, unreadable or truncated, not written by zslfast (a pickle with code is refused
    by ``weights_only``), or changed since it was written (checksum mismatch)."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ZSLError(f"{what} {path}: no such file") from None
    except Exception as exc:  # truncated, foreign or code-bearing files: whatever torch raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZSLError(f"{what} {path}: cannot read it ({first[:200]})") from None
    if not isinstance(record, dict) or CHECKSUM_KEY not in record:
        kind = f"a {type(record).__name__}" if not isinstance(record, dict) else "a dict without a checksum"
        raise ZSLError(f"{what} {path}: not a file written by this zslfast (it holds {kind})")
    stored = record.pop(CHECKSUM_KEY)
    if content_hash(record) != stored:
        raise ZSLError(f"{what} {path}: checksum mismatch: the file changed after zslfast wrote it (corrupted "
                       "on disk or edited); it cannot be trusted")
    return record


def remove_stale_temporaries(folder):
    """Remove the temporary files of interrupted atomic writes in ``folder`` (a process killed while
    writing, e.g. ``kill -9`` during a checkpoint); returns their names. Call it only while the
    folder is this process's (:class:`zslfast.runfolder.RunFolder` holds its lock)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), TEMP_PATTERN)):
        if os.path.isfile(path):
            try:
                os.unlink(path)
                removed.append(os.path.basename(path))
            except OSError:
                pass
    return removed


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
