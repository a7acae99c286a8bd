"""ResNet-101 as the region-feature backbone, with torchvision's state-dict keys.

Written here so that feature extraction does not depend on torchvision (on some machines it only
comes with a multi-GB CUDA torch). The architecture is torchvision's ``resnet101``: Bottleneck
blocks [3, 4, 23, 3], the stride on the 3×3 convolution ("ResNet v1.5"), BatchNorm eps 1e-5; the
classifier is dropped, so the output is the last feature map [B, 2048, H/32, W/32] (14×14 at 448²),
what SC-EGG's preprocessing takes (``children()[:-2]``). Weights come only from a local file
(:func:`load_resnet101`); nothing is downloaded.
"""

import torch
from torch import nn

from zslfast.errors import ZSLError
from zslfast.io import file_hash

# sha256[:8] of torchvision's ImageNet weights files (the hash in their file names).
IMAGENET1K_V1 = "63fe2227"  # resnet101-63fe2227.pth: pretrained=True, what SC-EGG used
IMAGENET1K_V2 = "cd907fc2"  # resnet101-cd907fc2.pth: newer recipe, different features
LAYERS = (3, 4, 23, 3)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetBackbone(nn.Module):
    """ResNet up to its last convolutional stage (no pooling, no classifier)."""

    def __init__(self, layers=LAYERS):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, stride)] + [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_state(model, state, source):
    """Load a torchvision-keyed state dict into ``model``, ignoring ``fc.*``; any other missing or
    unexpected key is a ZSLError naming the first few."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ZSLError(f"{source}: not a ResNet-101 state dict with torchvision's keys (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}; {len(missing)} missing, {len(unexpected)} unexpected)")
    for k, v in model.state_dict().items():
        if state[k].shape != v.shape:
            raise ZSLError(f"{source}: '{k}' has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict(state)
    return model


def load_resnet101(path):
    """(backbone in eval mode, weights sha256) from a local ``.pth`` file of torchvision's resnet101."""
    import os

    if not path or not os.path.isfile(path):
        raise ZSLError(f"ResNet-101 weights file not found: {path!r} (a local torchvision resnet101 .pth, e.g. "
                       f"resnet101-{IMAGENET1K_V1}.pth; nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for files that are not state dicts
        raise ZSLError(f"{path}: cannot load as a torch state dict ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ZSLError(f"{path}: expected a state dict, got {type(state).__name__}")
    model = load_state(ResNetBackbone(), state, path)
    return model.eval(), file_hash(path)
