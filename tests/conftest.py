import os
import random

import pytest
import torch

from zslfast import ops
from zslfast.testing import ext_built_for

# Inputs are drawn fresh for every session unless ZSLFAST_TEST_SEED pins them; the seed is printed
# in the header so that any failure can be replayed.
SEED = int(os.environ.get("ZSLFAST_TEST_SEED", random.randrange(2**31)))


def pytest_configure(config):
    # CI sets ZSLFAST_REQUIRE_EXT=1: a silently missing extension must fail the run, not skip tests.
    if os.environ.get("ZSLFAST_REQUIRE_EXT") == "1" and not ops.extension_info()["cpu"]:
        raise pytest.UsageError(f"ZSLFAST_REQUIRE_EXT=1 but the extension is not loaded: {ops.extension_info()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that drew its inputs from the session seed (the ``gen`` fixture) says how to
    replay them; under ``ZSLFAST_REQUIRE_GOLDEN=1`` (CI) a skipped golden test fails."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "gen" in getattr(item, "fixturenames", ()):
        report.sections.append(("zslfast test seed", f"replay with ZSLFAST_TEST_SEED={SEED}"))
    if (report.skipped and item.get_closest_marker("golden") is not None
            and os.environ.get("ZSLFAST_REQUIRE_GOLDEN") == "1"):
        report.outcome = "failed"
        report.longrepr = ("ZSLFAST_REQUIRE_GOLDEN=1: a golden test must run here, but it was skipped: "
                           f"{report.longrepr}")


def pytest_report_header(config):
    info = ops.extension_info()
    return [f"zslfast test seed: {SEED} (replay with ZSLFAST_TEST_SEED={SEED})",
            f"zslfast extension: cpu={info['cpu']} cuda={info['cuda']} cuda_version={info['cuda_version']}"]


@pytest.fixture
def gen(request):
    """A CPU generator seeded from the session seed and the test's id (stable per test)."""
    g = torch.Generator()
    g.manual_seed((SEED + sum(map(ord, request.node.nodeid))) % 2**63)
    return g


@pytest.fixture
def use_backend(request):
    """Switch zslfast.ops to a backend for one test: `use_backend("ext", device)` skips when the
    extension was not built for the device."""
    def switch(name, device="cpu"):
        if name == "ext" and not ext_built_for(device):
            pytest.skip(f"extension not built for {device}")
        ops.set_backend(name)

    saved = ops.extension_info()["mode"]
    yield switch
    ops.set_backend(saved)
