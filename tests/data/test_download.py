"""``python -m zslfast.data download``: against a local HTTP server on the loopback address serving a
small archive of xlsa17's layout (there is no internet here): a broken download continues with a
range request, the result loads as a dataset, and damaged or foreign archives are refused."""
import http.server
import io
import threading
import zipfile

import pytest

from zslfast.data import make_synthetic
from zslfast.data.download import SOURCES, download
from zslfast.data.download import main as download_main
from zslfast.data.synthetic import write_xlsa17
from zslfast.data.xlsa17 import read_xlsa17_folder
from zslfast.errors import ZSLError


def _archive(tmp_path, names=SOURCES["xlsa17"]["datasets"]):
    """An xlsa17.zip's layout (xlsa17/data/NAME/{res101,att_splits}.mat) with small synthetic data."""
    data = make_synthetic(seed=0, num_classes=12, num_unseen=3, feature_dim=16, attribute_dim=8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            folder = write_xlsa17(data, str(tmp_path / "src"), name)
            for f in ("res101.mat", "att_splits.mat"):
                z.write(f"{folder}/{f}", f"xlsa17/data/{name}/{f}")
        z.writestr("xlsa17/README.txt", "readme")
    return buf.getvalue()


@pytest.fixture
def server():
    """(serve(body, cut=None, ranges=True) -> url, requests): a loopback HTTP server; ``cut``: the
    first response stops after that many bytes; ``ranges``: whether Range requests are honoured."""
    state = {"body": b"", "cut": None, "ranges": True, "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if not self.path.endswith("/xlsa17.zip"):
                self.send_error(404)
                return
            rng = self.headers.get("Range")
            state["requests"].append(rng)
            start = int(rng[len("bytes="):-1]) if rng and state["ranges"] else 0
            body = state["body"][start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(state['body']) - 1}/{len(state['body'])}")
            self.end_headers()
            if state["cut"] is not None:
                body, state["cut"] = body[:state["cut"]], None
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def serve(body, cut=None, ranges=True):
        state.update(body=body, cut=cut, ranges=ranges)
        return f"http://127.0.0.1:{httpd.server_address[1]}/xlsa17.zip"

    yield serve, state["requests"]
    httpd.shutdown()


def test_a_broken_download_continues_and_unpacks_into_the_data_root(tmp_path, server):
    serve, requests = server
    body = _archive(tmp_path)
    url = serve(body, cut=len(body) // 3)
    root = tmp_path / "root"
    with pytest.raises(ZSLError, match="run the command again to continue"):
        download("xlsa17", str(root), url=url, progress=False)
    assert (root / ".xlsa17.zip.part").stat().st_size == len(body) // 3
    assert download_main(["xlsa17", "--to", str(root), "--url", url, "--no-progress"]) == 0
    assert requests == [None, f"bytes={len(body) // 3}-"]  # the second request asked for the rest only
    assert not (root / ".xlsa17.zip.part").exists() and not (root / ".unpacking").exists()
    for name in SOURCES["xlsa17"]["datasets"]:
        data = read_xlsa17_folder(str(root / name))
        assert data.features.shape == (data.labels.numel(), 16) and data.num_classes == 12
    # run again: the existing folders are kept, nothing is overwritten
    (root / "CUB" / "mine.txt").write_text("kept")
    assert download("xlsa17", str(root), url=serve(body), progress=False) == []
    assert (root / "CUB" / "mine.txt").read_text() == "kept"


def test_a_server_that_ignores_ranges_sends_the_whole_file_again(tmp_path, server):
    serve, _ = server
    body = _archive(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / ".xlsa17.zip.part").write_bytes(body[:100])
    assert download("xlsa17", str(root), url=serve(body, ranges=False), progress=False) == list(SOURCES["xlsa17"]["datasets"])


def test_damaged_foreign_or_unreachable_archives_are_refused(tmp_path, server):
    serve, _ = server
    body = bytearray(_archive(tmp_path))
    info = zipfile.ZipFile(io.BytesIO(bytes(body))).getinfo("xlsa17/data/CUB/res101.mat")
    body[info.header_offset + 100] ^= 0xFF  # inside CUB's compressed features
    with pytest.raises(ZSLError, match="(corrupted|not a valid zip)"):
        download("xlsa17", str(tmp_path / "a"), url=serve(bytes(body)), progress=False)
    with pytest.raises(ZSLError, match="not the expected archive: xlsa17/data/SUN/res101.mat"):
        download("xlsa17", str(tmp_path / "b"), url=serve(_archive(tmp_path, ("APY", "AWA1", "AWA2", "CUB"))),
                 progress=False)
    with pytest.raises(ZSLError, match="HTTP 404 Not Found"):
        download("xlsa17", str(tmp_path / "c"), url=serve(b"").replace("xlsa17.zip", "other.zip"), progress=False)
    with pytest.raises(ZSLError, match="cannot connect"):
        download("xlsa17", str(tmp_path / "d"), url="http://127.0.0.1:1/xlsa17.zip", progress=False)
