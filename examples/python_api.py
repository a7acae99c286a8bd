"""The Python API end to end: train without five classes, then recognise them from their attribute
vectors alone (python examples/python_api.py; about 15 s on 2 CPU cores)."""
import torch

import zslfast

data = zslfast.load_dataset("synthetic")              # or load_dataset("CUB", root=...), from_arrays(...)
left_out = data.unseen_classes[::2]                   # 5 classes with no training image, ever
run = zslfast.fit("gsmflow", data.without_classes(left_out), quick=True, seed=0,
                  out="runs/api_gsmflow", overwrite=True, progress=False)  # rerun: replace it
print(run)                                            # its test metrics (45 classes), curves in run.curves

names = [data.class_names[int(c)] for c in left_out]
model = run.model.with_classes((names, data.attributes[left_out]))   # or a CSV / att_splits.mat
print(f"{len(names)} new classes added in {model.refit_s:.1f} s")

rows = torch.isin(data.labels, left_out)
pred = model.predict(data.features[rows], setting="zsl")             # ids into model.class_names_all
truth = [data.class_names[int(c)] for c in data.labels[rows]]
hits = [p == t for p, t in zip(model.class_names(pred), truth)]
print(f"accuracy among the new classes: {100 * sum(hits) / len(hits):.1f}% (chance {100 / len(names):.0f}%)")
print(model.class_names(model.predict(data.features[rows][:3], top_k=2)), truth[:3])   # top 2, truth
