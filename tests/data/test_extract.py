"""Feature extraction with a random-weight ResNet-101 on a few tiny generated images: the backbone's
torchvision layout, SC-EGG's transform, shapes, determinism, resume after an interruption, the HDF5
round trip, and the refusals (no weights, bad weights)."""
import os

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
Image = pytest.importorskip("PIL.Image")

from zslfast.data import extract  # noqa: E402
from zslfast.data.regions import read_region_hdf5  # noqa: E402
from zslfast.data.synthetic import write_att_splits  # noqa: E402
from zslfast.data.synthetic_regions import make_synthetic_regions  # noqa: E402
from zslfast.errors import ZSLError  # noqa: E402
from zslfast.nn.resnet import ResNetBackbone, load_resnet101  # noqa: E402

N_IMAGES = 6


def test_backbone_is_torchvision_resnet101():
    model = ResNetBackbone()
    # torchvision documents 44,549,160 parameters for resnet101; its fc layer holds 2048·1000 + 1000.
    assert sum(p.numel() for p in model.parameters()) == 44_549_160 - 2_049_000
    sd = model.state_dict()
    assert tuple(sd["layer3.22.conv3.weight"].shape) == (1024, 256, 1, 1)
    assert tuple(sd["layer4.0.downsample.0.weight"].shape) == (2048, 1024, 1, 1)
    assert tuple(sd["layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)  # the stride sits on the 3×3 conv
    assert "layer1.0.downsample.1.running_var" in sd and "layer1.1.downsample.0.weight" not in sd
    out = model.eval()(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 2048, 2, 3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    state = ResNetBackbone().state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # ignored on load
    path = str(tmp_path_factory.mktemp("w") / "random_resnet101.pth")
    torch.save(state, path)
    return path


def test_bad_weight_files(weights, tmp_path):
    state = torch.load(weights, weights_only=True)
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    bad = str(tmp_path / "bad.pth")
    torch.save(state, bad)
    with pytest.raises(ZSLError, match="missing \\['layer1.0.conv1.weight'\\], unexpected \\['extra.weight'\\]"):
        load_resnet101(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"nope")
    with pytest.raises(ZSLError, match="cannot load as a torch state dict"):
        load_resnet101(str(junk))
    with pytest.raises(ZSLError, match="weights file not found"):
        load_resnet101(str(tmp_path / "missing.pth"))


def test_transform_is_short_side_resize_and_round_centre_crop(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)  # H=60, W=100
    path = str(tmp_path / "a.png")
    Image.fromarray(arr).save(path)
    x = extract.preprocess(path, 32)
    # by hand: short side 60 -> 32, long int(32·100/60) = 53, crop left round(10.5) = 10 (Python rounding)
    img = Image.fromarray(arr).resize((53, 32), Image.BILINEAR).crop((10, 0, 42, 32))
    ref = (np.asarray(img, dtype=np.float32) / 255 - np.array(extract.IMAGENET_MEAN)) / np.array(extract.IMAGENET_STD)
    assert x.shape == (3, 32, 32)
    assert np.allclose(x.numpy(), ref.transpose(2, 0, 1).astype(np.float32), atol=1e-6)
    gray = str(tmp_path / "g.png")
    Image.fromarray(arr[:, :, 0]).save(gray)  # non-RGB images are converted
    g = extract.preprocess(gray, 32)
    assert g.shape == (3, 32, 32) and torch.allclose(g[0] * extract.IMAGENET_STD[0] + extract.IMAGENET_MEAN[0],
                                                      g[1] * extract.IMAGENET_STD[1] + extract.IMAGENET_MEAN[1],
                                                      atol=1e-6)


@pytest.fixture
def image_set(tmp_path):
    """Six small images of varied sizes and modes, a list file and an att_splits.mat indexing it."""
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    meta = make_synthetic_regions(seed=0, num_classes=3, num_unseen=1, attribute_dim=4, images_per_class=2,
                                  channels=4, grid=(1, 1))
    lines = []
    for i in range(N_IMAGES):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        sub = root / f"c{int(meta.labels[i])}"
        sub.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr) if i % 2 else Image.fromarray(arr).convert("L")
        img.save(sub / f"img{i}.jpg")
        lines.append(f"c{int(meta.labels[i])}/img{i}.jpg {int(meta.labels[i]) + 1}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    write_att_splits(meta, str(tmp_path / "DS"))
    return tmp_path, meta


def _run(tmp, weights, out, *extra):
    return extract.main(["--images", str(tmp / "images"), "--list", str(tmp / "list.txt"),
                         "--att-splits", str(tmp / "DS" / "att_splits.mat"), "--weights", weights,
                         "--out", str(out), "--size", "64", "--batch", "4", "--quiet", *extra])


def test_extract_writes_region_file_and_pooled_features(image_set, weights, tmp_path):
    tmp, meta = image_set
    with pytest.warns(UserWarning, match="not torchvision's IMAGENET1K_V1"):
        assert _run(tmp, weights, tmp_path / "out1") == 0
    d = read_region_hdf5(str(tmp_path / "out1" / "DS" / "feature_map_ResNet_101_DS.hdf5"), storage="stream",
                         w2v="random")
    maps = d.features.read()
    assert maps.shape == (N_IMAGES, 2048, 4) and torch.isfinite(maps).all()
    assert torch.equal(d.labels, meta.labels) and d.class_names == meta.class_names
    for k in ("trainval", "test_seen", "test_unseen"):
        assert torch.equal(d.splits[k], meta.splits[k])
    # the maps are the backbone's output on the transformed images
    model, _ = load_resnet101(weights)
    with torch.no_grad():
        x = torch.stack([extract.preprocess(str(tmp / "images" / line.split()[0]), 64)
                         for line in (tmp / "list.txt").read_text().split("\n") if line])
        expected = model(x).flatten(2)
    assert torch.allclose(maps, expected, rtol=1e-4, atol=1e-5)
    from scipy.io import loadmat
    pooled = loadmat(str(tmp_path / "out1" / "DS" / "res101.mat"))
    assert pooled["features"].shape == (2048, N_IMAGES)
    assert np.allclose(pooled["features"].T, maps.mean(2).numpy(), atol=1e-5)
    assert (pooled["labels"].reshape(-1) == meta.labels.numpy() + 1).all()
    # deterministic: a second run gives the same file contents
    assert _run(tmp, weights, tmp_path / "out2") == 0
    d2 = read_region_hdf5(str(tmp_path / "out2" / "DS" / "feature_map_ResNet_101_DS.hdf5"), w2v="random")
    assert torch.equal(d2.features.read(), maps)


def test_interrupted_extraction_resumes(image_set, weights, tmp_path, monkeypatch):
    tmp, _ = image_set
    real = extract.preprocess
    calls = {"n": 0}

    def flaky(path, size):
        calls["n"] += 1
        if calls["n"] == 6:  # during the second batch of 4
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(extract, "preprocess", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp, weights, tmp_path / "out")
    final = tmp_path / "out" / "DS" / "feature_map_ResNet_101_DS.hdf5"
    assert not final.exists() and os.path.exists(str(final) + ".partial")
    import h5py
    with h5py.File(str(final) + ".partial", "r") as f:
        assert int(f.attrs["done"]) == 4  # the first batch is kept, the second is redone
    monkeypatch.setattr(extract, "preprocess", real)
    calls["n"] = 0
    assert _run(tmp, weights, tmp_path / "out") == 0
    assert final.exists() and not os.path.exists(str(final) + ".partial")
    assert _run(tmp, weights, tmp_path / "fresh") == 0
    a = read_region_hdf5(str(final), w2v="random").features.read()
    b = read_region_hdf5(str(tmp_path / "fresh" / "DS" / "feature_map_ResNet_101_DS.hdf5"), w2v="random")
    assert torch.equal(a, b.features.read())


def test_refuses_without_weights_in_one_line(image_set, tmp_path, capsys):
    tmp, _ = image_set
    code = extract.main(["--images", str(tmp / "images"), "--list", str(tmp / "list.txt"),
                         "--att-splits", str(tmp / "DS" / "att_splits.mat"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--weights is required" in err and "nothing is downloaded" in err
    assert not (tmp_path / "o").exists()


def test_refuses_missing_images_and_bad_labels(image_set, weights, tmp_path, capsys):
    tmp, _ = image_set
    lines = (tmp / "list.txt").read_text().split("\n")
    (tmp / "list.txt").write_text("\n".join(["c0/nothere.jpg 1"] + lines[1:]))
    assert _run(tmp, weights, tmp_path / "o") == 2
    assert "1 listed images not found, e.g." in capsys.readouterr().err
    (tmp / "list.txt").write_text("c0/nothere.jpg 1\n")
    assert _run(tmp, weights, tmp_path / "o") == 2
    assert "but there are only 1 samples" in capsys.readouterr().err
    (tmp / "list.txt").write_text("\n".join(lines[:-2] + ["c0/x.jpg 9", ""]))
    assert _run(tmp, weights, tmp_path / "o") == 2
    assert "labels must be 1-based class ids in [1, 3]" in capsys.readouterr().err


def test_extract_from_a_class_description_gives_a_runnable_dataset(image_set, weights, tmp_path):
    from zslfast.data.check import check_folder
    from zslfast.data.xlsa17 import read_xlsa17_folder

    tmp, meta = image_set
    unseen = set(meta.unseen_classes.tolist())
    rows = ["class,split,a0,a1,a2,a3"] + [f"{name},{'unseen' if c in unseen else 'seen'}," +
                                          ",".join(repr(float(v)) for v in meta.attributes[c])
                                          for c, name in enumerate(meta.class_names)]
    (tmp / "classes.csv").write_text("\n".join(rows) + "\n")
    args = ["--images", str(tmp / "images"), "--list", str(tmp / "list.txt"), "--classes", str(tmp / "classes.csv"),
            "--name", "OWN", "--weights", weights, "--out", str(tmp_path / "out"), "--size", "64", "--quiet"]
    with pytest.warns(UserWarning):
        assert extract.main(args) == 0
    data = read_xlsa17_folder(str(tmp_path / "out" / "OWN"))  # pooled res101.mat + the written att_splits.mat
    assert data.features.shape == (N_IMAGES, 2048) and torch.equal(data.labels, meta.labels)
    assert set(data.labels[data.splits["test_unseen"]].tolist()) == unseen
    assert "classes: 3 (2 seen, 1 unseen)" in check_folder(str(tmp_path / "out" / "OWN"))
    assert extract.main(args[:4] + ["--weights", weights, "--out", str(tmp_path / "o2")]) == 2  # no att source


@pytest.mark.slow  # trains SC-EGG on 2048-channel maps and runs the backbone twice: minutes
def test_predict_from_images_is_predict_from_their_extracted_maps(image_set, weights, tmp_path, capsys):
    """``predict --images DIR`` runs the extractor in memory: for a model on 2048 × 2 × 2 maps it gives
    the predictions of ``--features`` on the file the extractor writes for the same images."""
    import zslfast
    from zslfast.predict import main as predict_main

    tmp, _ = image_set
    data = make_synthetic_regions(seed=0, num_classes=6, num_unseen=2, attribute_dim=8, images_per_class=12,
                                  channels=2048, grid=(2, 2))
    run = zslfast.fit("scegg", data, quick=True, out=str(tmp_path / "scegg"), progress=False)
    with pytest.warns(UserWarning):
        assert _run(tmp, weights, tmp_path / "maps") == 0
    maps = str(tmp_path / "maps" / "DS" / "feature_map_ResNet_101_DS.hdf5")
    with pytest.warns(UserWarning, match="not torchvision's IMAGENET1K_V1"):
        assert predict_main([run.out, "--images", str(tmp / "images"), "--weights", weights, "--top-k", "2",
                             "--out", str(tmp_path / "images.csv")]) == 0
    assert predict_main([run.out, "--features", maps, "--top-k", "2", "--out", str(tmp_path / "maps.csv")]) == 0
    by_path = {row.split(",")[0]: row.split(",")[1:] for row in (tmp_path / "images.csv").read_text().splitlines()[1:]}
    listed = [line.split()[0] for line in (tmp / "list.txt").read_text().splitlines() if line]
    from_maps = [row.split(",")[1:] for row in (tmp_path / "maps.csv").read_text().splitlines()[1:]]
    assert len(by_path) == N_IMAGES and [by_path[str(tmp / "images" / p)] for p in listed] == from_maps
    capsys.readouterr()
    assert predict_main([run.out, "--images", str(tmp / "images")]) == 2
    assert "--images needs --weights" in capsys.readouterr().err
    assert predict_main([run.out, "--images", str(tmp / "images"), "--weights", weights, "--size", "96"]) == 2
    assert "gives 9 regions per image, the model was trained on 4" in capsys.readouterr().err
    eszsl = zslfast.fit("eszsl", quick=True, out=str(tmp_path / "eszsl"), progress=False)
    assert predict_main([eszsl.out, "--images", str(tmp / "images"), "--weights", weights]) == 2
    assert "eszsl reads feature vectors; extract them first" in capsys.readouterr().err
