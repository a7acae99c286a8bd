"""Synthetic region data: determinism per image, planted footprints, attention vs global average
pooling, --like with real attributes and word vectors, and the CLI's HDF5 round trip."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from zslfast import ops
from zslfast.data.synthetic_regions import make_synthetic_regions

from .conftest import SHARED_DATA, real_att_splits

SMALL = dict(num_classes=10, num_unseen=3, attribute_dim=16, images_per_class=8, channels=32, grid=(4, 4))


def test_deterministic_and_each_image_stands_alone():
    a = make_synthetic_regions(seed=5, **SMALL)
    b = make_synthetic_regions(seed=5, **SMALL)
    c = make_synthetic_regions(seed=6, **SMALL)
    assert torch.equal(a.features.read(), b.features.read()) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.footprints["region"], b.footprints["region"]) and torch.equal(a.w2v, b.w2v)
    assert not torch.equal(a.features.read(), c.features.read())
    # a dataset with more images per class has other labels, but any image with the same label
    # drawn for the same index is the same image: generation is per image, not sequential
    from zslfast.data.synthetic_regions import SyntheticRegions
    gen = SyntheticRegions(a.attributes.numpy(), a.labels.numpy(), seed=5, channels=32, grid=(4, 4))
    fmap, fp, nb = gen.image(17)
    assert np.array_equal(fmap, a.features.read(torch.tensor([17]))[0].numpy())
    assert np.array_equal(fp, a.footprints["region"][17].numpy())


def test_footprints_are_where_the_prototypes_were_planted():
    d = make_synthetic_regions(seed=1, **SMALL)
    x = d.features.read()
    U = d.footprints["prototypes"]
    fp = d.footprints["region"].long()
    assert ((fp >= -1) & (fp < 16)).all() and (fp >= 0).any() and (fp < 0).any()
    n, i = torch.nonzero(fp >= 0, as_tuple=True)
    at_fp = F.cosine_similarity(x[n, :, fp[n, i]], U[i], dim=1)
    rand = F.cosine_similarity(x[n, :, (fp[n, i] + 5) % 16], U[i], dim=1)
    assert float(at_fp.mean()) > 0.5 and float(at_fp.mean()) > 2 * float(rand.mean())
    assert (x >= 0).all()
    # presence follows the class attributes: present pairs have higher attributes than absent ones
    att = d.attributes[d.labels]
    assert float(att[fp >= 0].mean()) > 2 * float(att[fp < 0].mean())


def test_attention_with_oracle_queries_finds_the_footprints_and_beats_average_pooling():
    d = make_synthetic_regions(seed=0, num_classes=20, num_unseen=5, attribute_dim=32, images_per_class=10,
                               channels=64, grid=(7, 7))
    x = d.features.read()
    U = d.footprints["prototypes"]
    fp, nb = d.footprints["region"].long(), d.footprints["neighbour"].long()
    present = fp >= 0
    h, attn = ops.attention_pool(x, 20 * U, True, "none")
    mass = attn.gather(2, fp.clamp_min(0)[..., None])[..., 0]
    mass = mass + torch.where(nb >= 0, attn.gather(2, nb.clamp_min(0)[..., None])[..., 0], 0)
    uniform = 2 / 49
    assert float(mass[present].mean()) > 0.8 > 10 * uniform
    # With zero queries attention is uniform: the footprint holds exactly its share of the mass.
    _, flat = ops.attention_pool(x, torch.zeros_like(U), True, "none")
    assert torch.allclose(flat, torch.full_like(flat, 1 / 49))
    # Detecting which attributes an image has: attention's per-attribute feature vs the global mean.
    s_att = F.cosine_similarity(h, U[None], dim=2)
    s_gap = F.cosine_similarity(x.mean(2)[:, None, :], U[None], dim=2)
    auc_att = roc_auc_score(present.flatten(), s_att.flatten())
    auc_gap = roc_auc_score(present.flatten(), s_gap.flatten())
    assert auc_att > 0.99 and auc_att - auc_gap > 0.01, (auc_att, auc_gap)
    # The planted attribute's share of the pooled feature: attention keeps it, averaging dilutes it.
    n, i = torch.nonzero(present, as_tuple=True)
    share_att = (h[n, i] * U[i]).sum(1) / h[n, i].norm(dim=1)
    gap = x.mean(2)
    share_gap = (gap[n] * U[i]).sum(1) / gap[n].norm(dim=1)
    assert float(share_att.mean()) > 2 * float(share_gap.mean())


def test_word_vectors_are_a_noisy_view_of_the_prototypes():
    d = make_synthetic_regions(seed=2, **SMALL)
    w = F.normalize(d.w2v, dim=1)
    U = d.footprints["prototypes"]
    # similar prototypes have similar word vectors: the two Gram matrices correlate
    gw, gu = (w @ w.T).flatten(), (U @ U.T).flatten()
    assert float(torch.corrcoef(torch.stack([gw, gu]))[0, 1]) > 0.5
    assert d.w2v.shape == (16, 300)


def test_like_sun_uses_real_attributes_splits_and_word_vectors():
    path = real_att_splits("SUN")
    import os
    w2v = np.load(os.path.join(SHARED_DATA, "SUN", "w2v_att.npy"))
    d = make_synthetic_regions(like=path, channels=8, grid=(2, 2))
    from zslfast.data.xlsa17 import read_att_splits
    meta = read_att_splits(path)
    assert d.name == "SUN" and d.num_classes == 717 and d.class_names == meta["class_names"]
    assert torch.allclose(d.attributes, meta["attributes"])
    assert {k: int(v.numel()) for k, v in d.splits.items() if k in ("trainval", "test_seen", "test_unseen")} == \
        {k: int(meta["splits"][k].numel()) for k in ("trainval", "test_seen", "test_unseen")}
    assert len(d.unseen_classes) == 72
    assert np.allclose(d.w2v.numpy(), w2v, atol=1e-6)
    assert not w2v[88].any()  # DAZLE's SUN row 88 ("man-made") is all zero ...
    assert float(d.footprints["prototypes"][88].norm()) > 0.99  # ... and still gets a prototype


def test_cli_writes_a_readable_region_file(tmp_path):
    pytest.importorskip("h5py")
    from zslfast.data import synthetic_regions
    from zslfast.data.regions import load_regions
    assert synthetic_regions.main(["--out", str(tmp_path), "--channels", "16", "--grid", "3", "3"]) == 0
    d = load_regions(str(tmp_path), "synthetic_default", storage="stream")
    ref = make_synthetic_regions(channels=16, grid=(3, 3))
    assert d.features.shape == (3000, 16, 9)
    idx = torch.tensor([0, 1234, 2999])
    assert torch.equal(d.features.read(idx), ref.features.read(idx))
    assert d.class_names == ref.class_names and torch.equal(d.splits["val"], ref.splits["val"])
    assert torch.allclose(d.w2v, ref.w2v)
