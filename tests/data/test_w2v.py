"""Attribute word vectors: the file's own, a .npy (never a pickle), random; zero rows; bad input."""
import os
import pickle

import numpy as np
import pytest
import torch

from zslfast.data.w2v import find_shared_w2v, random_w2v, resolve_w2v
from zslfast.errors import ZSLError

from .conftest import SHARED_DATA, real_att_splits


def test_sources(tmp_path):
    file_w2v = np.arange(12, dtype=np.float64).reshape(4, 3)
    v, info = resolve_w2v("auto", 4, file_w2v, source="f.hdf5")
    assert torch.equal(v, torch.from_numpy(file_w2v).float()) and info["source"] == "file"
    path = tmp_path / "w.npy"
    np.save(path, file_w2v * 2)
    v, info = resolve_w2v(str(path), 4)
    assert torch.equal(v, torch.from_numpy(file_w2v * 2).float()) and info["dim"] == 3
    r1, info = resolve_w2v("random", 4, seed=1)
    r2, _ = resolve_w2v("random", 4, seed=1)
    assert r1.shape == (4, 300) and torch.equal(r1, r2) and info["source"] == "random"
    assert torch.allclose(r1.norm(dim=1), torch.ones(4))
    assert not np.array_equal(random_w2v(4, 1), random_w2v(4, 2))


def test_refusals(tmp_path):
    with pytest.raises(ZSLError, match="no 'w2v_att' in the file"):
        resolve_w2v("auto", 4, None, source="f.hdf5")
    pkl = tmp_path / "w.pkl"
    pkl.write_bytes(pickle.dumps(np.zeros((4, 3))))
    with pytest.raises(ZSLError, match="only .npy files are read"):
        resolve_w2v(str(pkl), 4)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(ZSLError, match="not a plain numeric .npy"):
        resolve_w2v(str(obj), 4)
    np.save(tmp_path / "short.npy", np.zeros((3, 5)))
    with pytest.raises(ZSLError, match="3 word vectors for 4 attributes"):
        resolve_w2v(str(tmp_path / "short.npy"), 4)
    bad = np.ones((4, 3))
    bad[1, 1] = np.nan
    with pytest.raises(ZSLError, match="NaN/inf"):
        resolve_w2v("auto", 4, bad)
    with pytest.raises(ZSLError, match="file not found"):
        resolve_w2v(str(tmp_path / "missing.npy"), 4)


def test_real_sun_vectors_and_their_zero_row():
    real_att_splits("SUN")
    path = find_shared_w2v("SUN", os.path.normpath(SHARED_DATA))
    assert path and path.endswith(os.path.join("SUN", "w2v_att.npy"))
    with pytest.warns(UserWarning, match=r"\[88\] are all zero"):
        v, info = resolve_w2v(path, 102)
    assert v.shape == (102, 300) and info["zero_rows"] == [88]
    for name, a in (("CUB", 312), ("AWA2", 85)):
        v, info = resolve_w2v(find_shared_w2v(name, os.path.normpath(SHARED_DATA)), a)
        assert v.shape == (a, 300) and info["zero_rows"] == []
