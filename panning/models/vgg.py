"""VGG-19 with BatchNorm for CIFAR, as used by the pruning-at-initialization papers (GraSP, SynFlow, Panning):
the 16 conv layers of VGG-19 (3x3, each followed by BatchNorm and ReLU, max-pooling between stages), then
global average pooling and a single linear classifier."""
from __future__ import annotations

from torch import nn

from .common import scaled

CFG_19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)


class VGG(nn.Module):
    """``features`` (conv/BN/ReLU/max-pool per ``cfg``) -> global average pool -> ``classifier``.

    Conv layers carry no bias: the BatchNorm after each one would cancel it. ``width`` scales every conv.
    """

    def __init__(self, input_shape, num_classes: int, cfg=CFG_19, width: float = 1.0):
        super().__init__()
        in_channels = input_shape[0]
        layers: list[nn.Module] = []
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c = scaled(v, width)
            layers += [nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            in_channels = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))
