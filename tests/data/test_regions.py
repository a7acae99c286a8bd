"""Region-feature HDF5 files (SC-EGG layout): round trips in both storage modes, the refusals, the
cross-image-chunk trap and repack, att_splits beside the file, validation views."""
import os

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from zslfast.data import regions  # noqa: E402
from zslfast.data.regions import RegionFeatures, read_region_hdf5, write_region_hdf5  # noqa: E402
from zslfast.data.synthetic import write_att_splits  # noqa: E402
from zslfast.data.synthetic_regions import make_synthetic_regions  # noqa: E402
from zslfast.errors import ZSLError  # noqa: E402

SMALL = dict(num_classes=8, num_unseen=2, attribute_dim=6, images_per_class=5, channels=8, grid=(2, 3))


@pytest.fixture(scope="module")
def small():
    return make_synthetic_regions(seed=3, **SMALL)


def _write(data, path, **kw):
    return write_region_hdf5(path, data.features, data.labels, data.splits, data.attributes, w2v=data.w2v, **kw)


def test_round_trip_memory_and_stream_equal(small, tmp_path):
    path = _write(small, str(tmp_path / "S" / "feature_map_ResNet_101_S.hdf5"), grid=(2, 3))
    with h5py.File(path, "r") as f:
        assert f["feature_map"].shape == (40, 8, 2, 3) and f["feature_map"].chunks == (1, 8, 2, 3)
        assert f["trainval_loc"].dtype == np.uint16 and f["labels"].dtype == np.int64
    mem = read_region_hdf5(path, storage="memory")
    stream = read_region_hdf5(path, storage="stream")
    assert mem.features.storage == "memory" and stream.features.storage == "stream"
    assert mem.name == "S" and mem.features.shape == (40, 8, 6)
    full = small.features.read()
    idx = torch.tensor([7, 3, 3, 0, 39, 12, 13, 14])  # unsorted, repeated, runs
    assert torch.equal(mem.features.read(idx), full[idx]) and torch.equal(stream.features.read(idx), full[idx])
    for d in (mem, stream):
        assert torch.equal(d.labels, small.labels) and torch.allclose(d.attributes, small.attributes)
        assert torch.allclose(d.w2v, small.w2v)
        for k in ("trainval", "test_seen", "test_unseen"):
            assert torch.equal(d.splits[k], small.splits[k])
    # a view of a view reads the right images, in both modes
    view = stream.features[torch.tensor([5, 1, 9])][torch.tensor([2, 0])]
    assert torch.equal(view.read(), full[[9, 5]])
    blocks = torch.cat([b for _, b in mem.features.blocks(block_size=7)])
    assert torch.equal(blocks, full)


def test_float16_maps_read_as_float32(small, tmp_path):
    path = _write(small, str(tmp_path / "h.hdf5"), dtype="float16")
    d = read_region_hdf5(path, storage="stream")
    got = d.features.read()
    assert got.dtype == torch.float32
    assert torch.allclose(got, small.features.read(), rtol=1e-3, atol=1e-3)


def _corrupt(small, tmp_path, edit):
    path = _write(small, str(tmp_path / "bad.hdf5"))
    with h5py.File(path, "a") as f:
        edit(f)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.__delitem__("labels"), "missing dataset 'labels'"),
    (lambda f: (f.__delitem__("feature_map"), f.create_dataset("feature_map", data=np.zeros((40, 8)))),
     "must be \\(N, C, H, W\\) or \\(N, C, R\\)"),
    (lambda f: (f.__delitem__("feature_map"), f.create_dataset("feature_map", data=np.zeros((40, 8, 6), np.int32))),
     "float32 or float16"),
    (lambda f: (f.__delitem__("labels"), f.create_dataset("labels", data=np.arange(40) % 50)),
     "'labels' must be 0-based class ids in \\[0, 8\\)"),
    (lambda f: (f.__delitem__("labels"), f.create_dataset("labels", data=np.zeros(39, np.int64))),
     "'labels' has 39 entries for 40"),
    (lambda f: (f.__delitem__("test_seen_loc"), f.create_dataset("test_seen_loc", data=np.array([0, 40], np.uint16))),
     "'test_seen_loc' must hold 0-based image indices in \\[0, 40\\)"),
    (lambda f: (f.__delitem__("test_seen_loc"), f.create_dataset("test_seen_loc", data=f["trainval_loc"][:2])),
     "overlap"),
    (lambda f: f["att"].__setitem__((0, 0), np.nan), "'att' contains NaN/inf"),
    (lambda f: (f.__delitem__("w2v_att"), f.create_dataset("w2v_att", data=np.zeros((5, 3)))),
     "5 word vectors for 6 attributes"),
])
def test_bad_files_are_refused_with_one_line(small, tmp_path, edit, message):
    path = _corrupt(small, tmp_path, edit)
    with pytest.raises(ZSLError, match=message) as err:
        read_region_hdf5(path, storage="memory")
    assert path in str(err.value) and "\n" not in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(ZSLError, match="file not found"):
        read_region_hdf5(str(tmp_path / "nope.hdf5"))
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(ZSLError, match="cannot read as an HDF5 file"):
        read_region_hdf5(str(junk))


def test_non_finite_maps_are_caught_when_the_file_is_read_and_per_batch(small, tmp_path):
    path = _corrupt(small, tmp_path, lambda f: f["feature_map"].__setitem__((4, 0, 0), np.inf))
    for storage in ("stream", "memory"):  # the whole file is scanned before any training
        with pytest.raises(ZSLError, match="images \\[4\\] contain NaN/inf"):
            read_region_hdf5(path, storage=storage)
    features = regions.RegionFeatures(path=path)  # and every batch read is checked again
    features.read(torch.tensor([0, 1]))  # clean images read fine
    with pytest.raises(ZSLError, match="images \\[4\\] contain NaN/inf"):
        features.read(torch.tensor([3, 4]))


def test_cross_image_chunks_refused_for_streaming_and_repack_fixes_them(small, tmp_path):
    path = _write(small, str(tmp_path / "gz.hdf5"), chunks=(16, 4, 6), compression="gzip")
    with pytest.raises(ZSLError, match="chunked across images .*python -m zslfast.data regions repack"):
        read_region_hdf5(path, storage="stream")
    mem = read_region_hdf5(path, storage="memory")  # whole-file, chunk-aligned reads are fine
    assert torch.equal(mem.features.read(), small.features.read())
    out = str(tmp_path / "packed.hdf5")
    assert regions.main(["repack", path, out, "--dtype", "float16"]) == 0
    with h5py.File(out, "r") as f:
        assert f["feature_map"].chunks == (1, 8, 6) and f["feature_map"].dtype == np.float16
        assert f["trainval_loc"].dtype == np.uint16
    packed = read_region_hdf5(out, storage="stream")
    assert torch.allclose(packed.features.read(), small.features.read(), rtol=1e-3, atol=1e-3)
    assert torch.equal(packed.labels, small.labels)


def test_att_splits_beside_the_file_gives_names_and_val_classes(small, tmp_path):
    folder = tmp_path / "S"
    path = _write(small, str(folder / "feature_map_ResNet_101_S.hdf5"))
    write_att_splits(small, str(folder))
    d = read_region_hdf5(path)
    assert d.class_names == small.class_names
    assert torch.equal(d.splits["val"], small.splits["val"])
    v = d.validation_split()
    assert torch.equal(torch.unique(v.labels[v.splits["test_unseen"]]),
                       torch.unique(small.labels[small.splits["val"]]))
    # the view holds trainval images only, read through the index map
    rows = small.splits["trainval"].sort().values
    assert torch.equal(v.features.read(), small.features.read(rows))
    # an att_splits.mat that disagrees with the file is refused
    other = make_synthetic_regions(seed=4, **SMALL)
    write_att_splits(other, str(folder))
    with pytest.raises(ZSLError, match="differs from the one in"):
        read_region_hdf5(path)


def test_auto_storage_and_bad_storage(small, tmp_path, monkeypatch):
    path = _write(small, str(tmp_path / "a.hdf5"))
    assert read_region_hdf5(path).features.storage == "memory"
    monkeypatch.setattr(regions, "available_memory", lambda: 1000)  # the file is larger than 60% of this
    assert read_region_hdf5(path).features.storage == "stream"
    with pytest.raises(ZSLError, match="storage must be one of auto, memory, stream"):
        read_region_hdf5(path, storage="disk")


def test_write_is_atomic(small, tmp_path):
    path = str(tmp_path / "x.hdf5")

    class Boom(RegionFeatures):
        def read(self, idx=None):
            raise RuntimeError("disk full")

    bad = Boom(array=small.features.read().numpy())
    with pytest.raises(RuntimeError, match="disk full"):
        write_region_hdf5(path, bad, small.labels, small.splits, small.attributes)
    assert os.listdir(tmp_path) == []


def test_info_reads_a_file_without_word_vectors_with_w2v_random(small, tmp_path, capsys):
    """The package's extractor writes no w2v_att unless given vectors: info takes --w2v like training."""
    path = write_region_hdf5(str(tmp_path / "x.hdf5"), small.features, small.labels, small.splits, small.attributes)
    assert regions.main(["info", path]) == 2
    assert "no 'w2v_att' in the file" in capsys.readouterr().err
    assert regions.main(["info", path, "--w2v", "random"]) == 0
    assert "40 images × 8 channels × 6 regions" in capsys.readouterr().out
