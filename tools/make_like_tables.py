"""Build zslfast/data/like/: what `--like NAME` needs from the six xlsa17 att_splits.mat files (the
class attributes, class names and the sizes of the three proposed splits) and DAZLE's attribute word
vectors, so that `--like NAME` works from an installed package without ../shared/data.

    python tools/make_like_tables.py [SHARED_DATA_DIR]     (default: ../shared/data)

The tables are read by zslfast.data.synthetic.read_like_table; tests/data/test_like_tables.py
checks that they equal the .mat files they come from.
"""
import os
import shutil
import sys

import numpy as np

from zslfast.data.xlsa17 import DATASETS, read_att_splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "zslfast", "data", "like")


def main(shared):
    os.makedirs(OUT, exist_ok=True)
    for name in DATASETS:
        meta = read_att_splits(os.path.join(shared, name, "att_splits.mat"))
        sizes = np.array([meta["splits"][k].numel() for k in ("trainval", "test_seen", "test_unseen")], np.int64)
        np.savez_compressed(os.path.join(OUT, f"{name}.npz"), attributes=meta["attributes"].numpy(),
                            class_names=np.array(meta["class_names"]), split_sizes=sizes)
        w2v = os.path.join(shared, name, "w2v_att.npy")
        if os.path.isfile(w2v):
            shutil.copyfile(w2v, os.path.join(OUT, f"{name}_w2v_att.npy"))
        print(name, meta["attributes"].shape, sizes.tolist(), "w2v" if os.path.isfile(w2v) else "")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "data"))
