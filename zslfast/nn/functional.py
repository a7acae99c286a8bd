"""Small tensor functions shared by the methods."""
import torch


def class_means(x, y, num_classes):
    """Per-class means of ``x`` [N, D] by labels ``y`` (a segment mean) and the class counts [C];
    classes without samples get a zero mean."""
    counts = torch.bincount(y, minlength=num_classes)
    sums = x.new_zeros(num_classes, x.shape[1]).index_add_(0, y, x)
    return sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype), counts
