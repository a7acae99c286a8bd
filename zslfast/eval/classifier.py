"""The final softmax classifier of generative ZSL methods (GSMFlow, SC-EGG, ...): a linear layer
trained with cross-entropy on real seen features plus synthetic unseen features, as in the methods'
shared ``classifier.py`` (reference note gsmflow.md §4): xavier-normal weights, zero bias,
Adam(lr, betas=(0.5, 0.999)), shuffled mini-batches.

The original code evaluates on the *test* set after every epoch and keeps the best epoch. Here the
epoch is chosen by a caller-supplied ``select_fn`` (normally a validation metric); passing a
test-set metric reproduces the original protocol and must be asked for explicitly (the CLI's
``--select-on-test``).
"""
import copy

import torch
from torch import nn
from tqdm.auto import tqdm


class SoftmaxClassifier(nn.Module):
    """Linear scores over all classes; ``forward`` returns logits [n, C]."""

    def __init__(self, in_dim, num_classes, generator=None):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)
        # Drawn from ``generator`` (not the global RNG) so that a classifier retrained from a saved
        # checkpoint with the same generator is the same classifier.
        nn.init.xavier_normal_(self.fc.weight, generator=generator)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(x)


def train_softmax_classifier(features, labels, num_classes, epochs=25, lr=1e-3, batch_size=512, beta1=0.5,
                             select_fn=None, generator=None, progress=False, desc="classifier"):
    """Train a :class:`SoftmaxClassifier` on (features, labels), all on the features' device.

    Args:
        select_fn: ``f(classifier) -> float`` evaluated after each epoch; the weights of the best
            epoch are returned. None: the last epoch.
        generator: a torch.Generator (on CPU) for the initial weights and the batch order, for
            determinism independent of the global RNG.

    Returns:
        (classifier, {"best_epoch", "best_score", "history"}).
    """
    device = features.device
    clf = SoftmaxClassifier(features.shape[1], num_classes, generator=generator).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, betas=(beta1, 0.999))
    n = features.shape[0]
    best, best_state, history = None, None, []
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        clf.train()
        perm = torch.randperm(n, generator=generator).to(device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(clf(features[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if select_fn is not None:
            clf.eval()
            score = float(select_fn(clf))
            history.append(score)
            if best is None or score > best[1]:
                best = (epoch, score)
                best_state = copy.deepcopy(clf.state_dict())
    if best_state is not None:
        clf.load_state_dict(best_state)
    clf.eval()
    return clf, {"best_epoch": best[0] if best else epochs - 1, "best_score": best[1] if best else None,
                 "history": history}
