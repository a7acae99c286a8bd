"""Backend selection, extension_info, and the package working with no compiled extension."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from zslfast import ops
from zslfast.testing import ext_built_for


def test_extension_info_fields():
    info = ops.extension_info()
    assert {"cpu", "cuda", "cuda_version"} <= set(info)
    assert isinstance(info["cpu"], bool) and isinstance(info["cuda"], bool)
    assert info["cuda_version"] is None or isinstance(info["cuda_version"], str)
    if info["cuda"]:
        assert info["cuda_version"] is not None


def test_backend_reports_and_switches():
    saved = ops.extension_info()["mode"]
    try:
        ops.set_backend("torch")
        assert ops.backend() == "torch"
        ops.set_backend("auto")
        assert ops.backend() == ("ext" if ext_built_for("cpu") else "torch")
        with pytest.raises(ValueError, match="backend must be one of"):
            ops.set_backend("fast")
    finally:
        ops.set_backend(saved)


@pytest.mark.skipif(not ext_built_for("cpu"), reason="compiled extension not available")
def test_ext_backend_routes_to_the_extension(monkeypatch):
    # With the compiled op replaced by a sentinel, an ext-backed call must reach it.
    saved = ops.extension_info()["mode"]
    calls = []
    real = torch.ops.zslfast.pairwise_distance

    class Spy:
        def __call__(self, *args):
            calls.append(args[2])
            return real(*args)

    monkeypatch.setattr(torch.ops.zslfast, "pairwise_distance", Spy())
    try:
        ops.set_backend("ext")
        ops.pairwise_distance(torch.randn(3, 2), torch.randn(2, 2), "cosine")
        ops.set_backend("torch")
        ops.pairwise_distance(torch.randn(3, 2), torch.randn(2, 2), "cosine")
    finally:
        ops.set_backend(saved)
    assert calls == ["cosine"]


# Blocks `import zslfast._C`, as if the package had been installed without its extension.
_NO_EXT = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "zslfast._C":
            raise ImportError("zslfast._C blocked for this test")
sys.meta_path.insert(0, _Block())
"""


def _run(code, **env):
    """Run `code` in a fresh interpreter where `import zslfast._C` fails."""
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", _NO_EXT + textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


def test_package_works_without_extension():
    proc = _run("""
        import torch, zslfast
        from zslfast import ops
        from zslfast.ops import reference as ref
        info = ops.extension_info()
        assert info["cpu"] is False and info["cuda"] is False and "blocked" in info["load_error"], info
        assert ops.backend() == "torch"
        x = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
        c = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
        assert torch.allclose(ops.pairwise_distance(x, c, "cosine"), ref.pairwise_distance(x, c, "cosine"))
        assert torch.equal(ops.nearest_prototype(x, c), ref.pairwise_distance(x, c, "cosine").argmin(1))
        P = ops.transition_matrix(x, x, 0.5, "cosine", True)
        assert torch.allclose(P.sum(1), torch.ones(20, dtype=torch.float64))
        T = ops.random_walk_landing(c, x, 3)
        T.sum().backward()
        y, ld = ops.affine_coupling(x, x, x)
        xb, ldr = ops.affine_coupling(y, x, x, reverse=True)
        assert torch.allclose(xb, x) and torch.allclose(ld + ldr, torch.zeros(20, dtype=torch.float64))
        g, attn = ops.attention_pool(x.T[None].relu(), c)
        assert g.shape == (1, 6) and torch.allclose(attn.sum(-1), torch.ones(1, 4, dtype=torch.float64))
        print("OK")
    """)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr


def test_ext_mode_without_extension_is_a_clear_error():
    proc = _run("""
        import torch
        from zslfast import ops
        try:
            ops.pairwise_distance(torch.randn(2, 2), torch.randn(2, 2))
        except RuntimeError as e:
            print("ERR:", e)
    """, ZSLFAST_BACKEND="ext")
    assert "ERR: ZSLFAST_BACKEND=ext but the compiled extension zslfast._C could not be loaded" in proc.stdout, \
        proc.stdout + proc.stderr


def test_bad_backend_env_is_a_clear_error():
    proc = _run("import zslfast", ZSLFAST_BACKEND="gpu")
    assert proc.returncode != 0 and "ZSLFAST_BACKEND must be one of auto, ext, torch, got 'gpu'" in proc.stderr
