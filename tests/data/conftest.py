import os

import numpy as np
import pytest
import scipy.io

SHARED_DATA = os.environ.get("ZSLFAST_SHARED_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                                     "shared", "data")
REAL = ["AWA1", "AWA2", "CUB", "SUN", "APY", "FLO"]


def real_att_splits(name):
    path = os.path.join(SHARED_DATA, name, "att_splits.mat")
    if not os.path.isfile(path):
        if os.environ.get("ZSLFAST_REQUIRE_DATA") == "1":  # CI has ../shared/data: a skip would hide coverage
            pytest.fail(f"ZSLFAST_REQUIRE_DATA=1 but the real data is missing: {path}")
        pytest.skip(f"real data not available: {path}")
    return path


def labels_for_splits(mat, num_unseen, rng):
    """Labels (1-based) consistent with an att_splits file's locations: unseen classes only in
    test_unseen, seen classes in trainval and test_seen, every class used."""
    c = mat["att"].shape[1]
    loc = {k: mat[k].reshape(-1).astype(np.int64) - 1 for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc")}
    n = max(int(v.max()) for v in loc.values()) + 1
    perm = rng.permutation(c)
    unseen, seen = perm[:num_unseen], perm[num_unseen:]
    labels = np.zeros(n, dtype=np.int64)
    for key, pool in (("trainval_loc", seen), ("test_seen_loc", seen), ("test_unseen_loc", unseen)):
        idx = loc[key]
        lab = np.concatenate([pool, rng.choice(pool, max(0, idx.size - pool.size))])[:idx.size]
        labels[idx] = rng.permutation(lab)
    return labels + 1


def write_res101(folder, labels, feature_dim=8, rng=None, **override):
    rng = rng or np.random.default_rng(0)
    fields = {"features": rng.random((feature_dim, labels.size)).astype(np.float32),
              "labels": labels[:, None].astype(np.int32)}
    fields.update(override)
    os.makedirs(folder, exist_ok=True)
    scipy.io.savemat(os.path.join(folder, "res101.mat"), fields)
