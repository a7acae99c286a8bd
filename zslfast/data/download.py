"""``python -m zslfast.data download xlsa17 --to DIR``: the benchmark features and splits, fetched,
checked and unpacked into the layout ``--data-root DIR`` reads.

The archive is the official one of Xian et al. ("Zero-Shot Learning — The Good, the Bad and the
Ugly"), ``http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip``: ``xlsa17/data/<NAME>/res101.mat`` and
``att_splits.mat`` for APY, AWA1, AWA2, CUB and SUN. What is checked, since no checksum is
published for it: the byte count against the server's ``Content-Length``, every member's CRC
(``zipfile.testzip``), and that every dataset folder holds both files. It downloads to
``DIR/.xlsa17.zip.part`` and a broken download continues from where it stopped (an HTTP range
request; a server that ignores it sends the whole file again). Each dataset folder is unpacked
beside the archive and moved into place only once complete; an existing ``DIR/<NAME>`` is kept
and reported, never overwritten.
"""
import argparse
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
import zlib

from zslfast.errors import ZSLError, run_cli

SOURCES = {
    "xlsa17": {"url": "http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip", "prefix": "xlsa17/data/",
               "datasets": ("APY", "AWA1", "AWA2", "CUB", "SUN"), "files": ("res101.mat", "att_splits.mat")},
}
CHUNK = 1 << 20


def fetch(url, path, timeout=60, progress=True):
    """Download ``url`` to ``path``, continuing a partial ``path``; returns its size in bytes. The
    size must match the server's Content-Length (one clear error otherwise)."""
    have = os.path.getsize(path) if os.path.exists(path) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part is the whole file
            return have
        raise ZSLError(f"download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ZSLError(f"download {url}: cannot connect ({getattr(exc, 'reason', exc)}); check the address and "
                       "the network, then run the command again (it continues where it stopped)") from None
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = (have if resumed else 0) + int(length) if length is not None else None
        if have and not resumed:
            print(f"[zslfast.data] the server ignored the range request: downloading {url} from the start",
                  file=sys.stderr)
        done = have if resumed else 0
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, disable=not progress,
                       desc=os.path.basename(url))
            with open(path, "ab" if resumed else "wb") as f:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    bar.update(len(block))
            bar.close()
        except (OSError, http.client.HTTPException) as exc:  # a dropped connection, a full disk
            raise ZSLError(f"download {url}: stopped after {done} bytes ({getattr(exc, 'strerror', None) or type(exc).__name__}); "
                           "run the command again to continue") from None
    if total is not None and done != total:
        raise ZSLError(f"download {url}: got {done} of {total} bytes; run the command again to continue")
    return done


def check_archive(path, source):
    """The archive's dataset folders, after checking every member's CRC and that each folder holds
    every expected file."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = set(z.namelist())
    except zipfile.BadZipFile as exc:
        raise ZSLError(f"{path}: not a valid zip archive ({exc}); delete it and download again") from None
    except zlib.error:  # a member's compressed stream is damaged (testzip decompresses every member)
        raise ZSLError(f"{path}: a member is corrupted (it does not decompress); delete the archive and download "
                       "again") from None
    if bad is not None:
        raise ZSLError(f"{path}: member {bad} is corrupted (CRC mismatch); delete the archive and download again")
    missing = [f"{source['prefix']}{d}/{f}" for d in source["datasets"] for f in source["files"]
               if f"{source['prefix']}{d}/{f}" not in names]
    if missing:
        raise ZSLError(f"{path}: not the expected archive: {', '.join(missing[:3])}"
                       + (f" and {len(missing) - 3} more" if len(missing) > 3 else "") + " missing")
    return list(source["datasets"])


def unpack(path, source, to):
    """Unpack every dataset folder of the archive to ``to/<NAME>/`` (each complete before it appears;
    existing folders kept); returns (unpacked, kept) names."""
    staging = os.path.join(to, ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    unpacked, kept = [], []
    with zipfile.ZipFile(path) as z:
        for name in source["datasets"]:
            target = os.path.join(to, name)
            if os.path.exists(target):
                kept.append(name)
                continue
            folder = os.path.join(staging, name)
            os.makedirs(folder)
            prefix = f"{source['prefix']}{name}/"
            for member in z.namelist():
                rest = member[len(prefix):]
                if member.startswith(prefix) and rest and "/" not in rest and ".." not in rest:
                    with z.open(member) as src, open(os.path.join(folder, rest), "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
            os.replace(folder, target)
            unpacked.append(name)
    shutil.rmtree(staging, ignore_errors=True)
    return unpacked, kept


def download(name, to, url=None, keep_archive=False, progress=True):
    """Fetch, check and unpack the archive ``name`` (``xlsa17``) into ``to``; returns the unpacked
    dataset names."""
    if name not in SOURCES:
        raise ZSLError(f"download {name!r}: unknown; available: {', '.join(SOURCES)}")
    source = SOURCES[name]
    url = url or source["url"]
    try:
        os.makedirs(to, exist_ok=True)
    except OSError as exc:
        raise ZSLError(f"--to {to}: cannot create it ({exc.strerror or exc})") from None
    part = os.path.join(to, f".{name}.zip.part")
    size = fetch(url, part, progress=progress)
    print(f"[zslfast.data] {url}: {size} bytes; checking the archive", file=sys.stderr)
    check_archive(part, source)
    unpacked, kept = unpack(part, source, to)
    if keep_archive:
        os.replace(part, os.path.join(to, f"{name}.zip"))
    else:
        os.unlink(part)
    for n in kept:
        print(f"[zslfast.data] {os.path.join(to, n)} exists: kept as it is", file=sys.stderr)
    print(f"unpacked {', '.join(unpacked) or 'nothing new'} into {to}: use --data-root {to} --dataset NAME")
    return unpacked


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m zslfast.data download", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(SOURCES), help="what to download")
    p.add_argument("--to", required=True, help="the data root to unpack into (DIR/<NAME>/res101.mat, ...)")
    p.add_argument("--url", help="another address of the same archive (a mirror)")
    p.add_argument("--keep-archive", action="store_true", help="keep the .zip beside the folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    return run_cli(lambda: download(args.name, args.to, args.url, args.keep_archive, not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
