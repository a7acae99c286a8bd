"""Files shaped like a user's own data, for trying README's "Your own features, step by step"
without any (python examples/own_features.py [--out own]; a second or two):

- ``feats.npy`` [N, 512] float32 image features and ``labels.npy`` [N] 0-based class ids;
- ``classes.csv``: ``class,split,<attributes>`` rows for the 45 classes they cover (``seen``,
  ``val``, or ``unseen``), in label order;
- ``new_feats.npy`` / ``new_labels.npy``: images of 5 more classes no file above mentions, and
  ``new_classes.csv``: those classes' names and attribute vectors (``name,<attributes>``), the new
  classes to recognise at predict time.

They are the built-in synthetic data (``zslfast.data.make_synthetic``) written out; any features
of your own in these formats take the same commands.
"""
import argparse
import csv
import os

import numpy as np

from zslfast.data import make_synthetic


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="own", help="folder to write the files into (default: own)")
    out = p.parse_args(argv).out
    os.makedirs(out, exist_ok=True)
    data = make_synthetic(seed=0)
    labels, att = data.labels.numpy(), data.attributes.numpy()
    new = set(data.unseen_classes[::2].tolist())                 # 5 classes held out of every file
    val = set(data.seen_classes[:8].tolist())                    # seen classes for model selection
    kept = [c for c in range(data.num_classes) if c not in new]  # the 45 classes of the training files
    index = {c: i for i, c in enumerate(kept)}                   # their 0-based ids in classes.csv order
    rows = np.isin(labels, kept)
    np.save(os.path.join(out, "feats.npy"), data.features.numpy()[rows])
    np.save(os.path.join(out, "labels.npy"), np.array([index[c] for c in labels[rows]], dtype=np.int64))
    names = data.class_names
    with open(os.path.join(out, "classes.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "split"] + [f"a{j}" for j in range(att.shape[1])])
        for c in kept:
            kind = "unseen" if c in set(data.unseen_classes.tolist()) else "val" if c in val else "seen"
            w.writerow([names[c], kind] + [f"{v:.6g}" for v in att[c]])
    held = np.isin(labels, sorted(new))
    np.save(os.path.join(out, "new_feats.npy"), data.features.numpy()[held])
    np.save(os.path.join(out, "new_labels.npy"), labels[held])
    with open(os.path.join(out, "new_classes.csv"), "w", newline="") as f:
        w = csv.writer(f)
        for c in sorted(new):
            w.writerow([names[c]] + [f"{v:.6g}" for v in att[c]])
    print(f"wrote {out}/: feats.npy {tuple(data.features[rows].shape)}, labels.npy, classes.csv ({len(kept)} classes), "
          f"new_feats.npy ({int(held.sum())} images of {len(new)} new classes), new_classes.csv")


if __name__ == "__main__":
    main()
