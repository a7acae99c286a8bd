"""A run's output folder: who owns it, what it must not overwrite, and the record it keeps.

Guarantees (each tested in ``tests/test_reliability.py``):

- **Nothing is silently overwritten.** A new run into a folder that holds another run's results
  (``results.json``, ``model.pt``, ``checkpoint.pt``) or an interrupted run's ``resume.pt`` is
  refused with one line, before any data is loaded; ``--overwrite`` replaces that run's files
  (named in the line it prints). The default ``--out`` (``runs/<method>_<dataset>_seed<S>``) is never
  refused: when it is taken, the run writes to the first free ``...-2``, ``...-3``.
- **One run per folder at a time.** The folder is locked (``.zslfast.lock``, an advisory
  ``flock`` held for the run's life) so a second run started into it is refused.
- **No stale temporaries.** The hidden temporary files of atomic writes that a killed process left
  behind (:func:`zslfast.io.remove_stale_temporaries`) are removed when the folder is claimed.
- **The record.** ``run.json`` (written at the start, updated at the end: the command line, the
  parsed arguments that ``--resume RUN_DIR`` alone reuses, start and end times, the status, the
  versions, the git commit of the code when it is a checkout, the SHA-256 of every data file read),
  ``config.yaml`` (the resolved settings with the file and layer that set each) and ``log.txt``
  (what the console showed, with timestamps, plus one line per training epoch).
"""
import datetime
import glob
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import warnings
from contextlib import contextmanager

from zslfast.engine.loop import Callback
from zslfast.errors import ZSLError
from zslfast.io import check_writable, file_hash, remove_stale_temporaries, write_atomic_text, write_json

RUN_RECORD = "run.json"
LOG_FILE = "log.txt"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".zslfast.lock"
# the files that make a folder "a run's": refusing to write over them is what --overwrite lifts
RESULT_FILES = ("results.json", "model.pt", "checkpoint.pt", "resume.pt", "summary.json")
RUN_FILES = RESULT_FILES + ("features.pt", "summary.md", RUN_RECORD, LOG_FILE, CONFIG_FILE)
# a file larger than this is fingerprinted from samples of it rather than read whole (said so in run.json)
FULL_HASH_LIMIT = 2 << 30
LOGGER = logging.getLogger("zslfast.run")


def now():
    """The local time as an ISO-8601 string with its UTC offset."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def holds_run(folder):
    """The run files in ``folder`` and in its ``seed<S>/`` folders (``--seeds``), as paths relative to
    it (a list, empty when it holds none)."""
    found = [f for f in RESULT_FILES if os.path.exists(os.path.join(folder, f))]
    for sub in sorted(glob.glob(os.path.join(glob.escape(folder), "seed[0-9]*"))):
        found += [os.path.join(os.path.basename(sub), f) for f in RESULT_FILES if os.path.exists(os.path.join(sub, f))]
    return found


def free_folder(folder, parts=()):
    """``folder`` if it holds no run (nor do its sub-folders ``parts``, e.g. a sweep's entries), else
    the first of ``folder-2``, ``folder-3``, ... that holds none."""
    candidate, n = folder, 1
    while holds_run(candidate) or any(holds_run(os.path.join(candidate, p)) for p in parts):
        n += 1
        candidate = f"{folder}-{n}"
    return candidate


class FolderLock:
    """An advisory lock on ``folder`` for this process's run (released by :meth:`release` or at exit)."""

    def __init__(self, folder):
        self.path = os.path.join(folder, LOCK_FILE)
        self.fd = None
        try:
            import fcntl
        except ImportError:  # no flock on this platform: the other guarantees still hold
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise ZSLError(f"--out {folder}: another zslfast run is writing there"
                           + (f" (pid {other})" if other else "") + "; wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def claim(folder, *, resume=False, overwrite=False, what="--out"):
    """Make ``folder`` this run's: writable, locked, free of stale temporaries, and either empty of
    runs, or (``resume``) the interrupted run being continued, or (``overwrite``) cleared of the
    previous run's files. Returns the :class:`FolderLock`; raises :class:`ZSLError` otherwise."""
    check_writable(folder, what)
    lock = FolderLock(folder)
    try:
        existing = holds_run(folder)
        if existing and not resume:
            if not overwrite:
                kind = (f"an interrupted run (resume.pt: continue it with --resume {folder})"
                        if existing == ["resume.pt"] else f"another run's results ({', '.join(existing)})")
                raise ZSLError(f"{what} {folder} holds {kind}; choose another {what}, or pass --overwrite to "
                               "replace it")
            removed = [f for f in RUN_FILES if os.path.isfile(os.path.join(folder, f))]
            removed += [os.path.join(os.path.basename(sub), f)
                        for sub in sorted(glob.glob(os.path.join(glob.escape(folder), "seed[0-9]*")))
                        for f in RUN_FILES if os.path.isfile(os.path.join(sub, f))]
            for f in removed:
                os.unlink(os.path.join(folder, f))
            LOGGER.info("--overwrite: removed the previous run's %s from %s", ", ".join(removed), folder)
            print(f"[zslfast] --overwrite: removed the previous run's {', '.join(removed)} from {folder}",
                  file=sys.stderr)
        stale = remove_stale_temporaries(folder)
        if stale:
            print(f"[zslfast] removed {len(stale)} temporary file(s) of an interrupted write in {folder}",
                  file=sys.stderr)
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------------------------- the record
def git_commit():
    """The git commit of the zslfast source (``+dirty`` when it has uncommitted changes), or None
    when the package is not a git checkout (an installed wheel) or git is not available."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        top = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if top.returncode != 0:
            return None
        root, commit = top.stdout.split()
        if os.path.realpath(os.path.join(root, "zslfast")) != os.path.realpath(here):
            return None  # a git repository around an installed package, not zslfast's own
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def data_file_hashes(paths):
    """{path: {size, sha256}} of the data files a run read; a file over 2 GiB gets ``sha256_sampled``
    (its size and 64 blocks of 1 MiB spread over it), since reading tens of GB would delay the run."""
    out = {}
    for path in dict.fromkeys(paths):
        if not path or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        entry = {"size": size}
        if size <= FULL_HASH_LIMIT:
            entry["sha256"] = file_hash(path)
        else:
            h = hashlib.sha256(str(size).encode())
            with open(path, "rb") as f:
                for i in range(64):
                    f.seek(i * (size - (1 << 20)) // 63)
                    h.update(f.read(1 << 20))
            entry["sha256_sampled"] = h.hexdigest()
        out[os.path.abspath(path)] = entry
    return out


def command_line(argv=None, prog="python -m zslfast.train"):
    """The training command with arguments ``argv`` (default: this process's), shell-quoted."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join([prog] + [shlex.quote(str(a)) for a in argv])


def read_record(folder):
    """The ``run.json`` of ``folder`` (None when there is none), one clear error when unreadable."""
    path = os.path.join(folder, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as exc:
        raise ZSLError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(record, dict):
        raise ZSLError(f"{path}: not a zslfast run record")
    return record


class RunRecord:
    """``run.json``, ``config.yaml`` and ``log.txt`` of one run folder (rank 0 only)."""

    def __init__(self, folder, args, config_text, versions):
        self.folder = folder
        self.path = os.path.join(folder, RUN_RECORD)
        previous = read_record(folder) if getattr(args, "resume", None) else None
        self.record = {
            "command": getattr(args, "command", None) or command_line(), "cwd": os.getcwd(),
            "args": {k: v for k, v in vars(args).items() if k not in ("resume", "data_given", "command")},
            "started": (previous or {}).get("started", now()),
            "resumed": (previous or {}).get("resumed", []) + ([now()] if previous else []),
            "finished": None, "status": "running", **versions, "git_commit": git_commit(), "data_files": {}}
        write_atomic_text(os.path.join(folder, CONFIG_FILE), config_text)
        self.write()

    def write(self):
        write_json(self.path, self.record)

    def data_files(self, paths):
        self.record["data_files"] = data_file_hashes(paths)
        self.write()

    def end(self, status, message=None):
        """The run ended (``finished``, ``interrupted``, ``failed``, ``diverged``): its end time and status."""
        self.record.update(finished=now(), status=status)
        if message:
            self.record["message"] = message
        try:
            self.write()
        except OSError:  # the record must not hide the error that ended the run (a full disk)
            pass


class EpochLog(Callback):
    """One log.txt line per training epoch (not on the console, where the progress bar shows it):
    the stage, the epoch, its mean losses and its evaluation score."""

    def on_epoch_end(self, event):
        if event.nested:
            return
        r = event.record
        losses = " ".join(f"{k} {v:.4g}" for k, v in r.get("loss", {}).items())
        LOGGER.info("stage %s epoch %d/%d: %s%s", event.stage, event.epoch, event.epochs, losses or "no losses",
                    f"; score {r['score']:.2f}" if "score" in r else "")


@contextmanager
def logged(folder):
    """While the block runs, ``LOGGER`` (and the warnings shown) also go to ``folder/log.txt``,
    appended, each line with its time."""
    handler = logging.FileHandler(os.path.join(folder, LOG_FILE), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        LOGGER.warning("warning: %s: %s", category.__name__, message)
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield handler
    finally:
        warnings.showwarning = show
        LOGGER.removeHandler(handler)
        handler.close()
