"""CIFAR ResNets (He et al. 2016, section 4.2) with 6n+2 layers; ResNet-32 has n=5 basic blocks per stage.

Stage widths 32/64/128 are the "ResNet-32 (x2)" of the GraSP and SynFlow papers (twice the original 16/32/64).
Where a block changes width or resolution its shortcut is a 1x1 conv + BatchNorm (projection shortcut).
"""
from __future__ import annotations

from torch import nn

from .common import scaled


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """conv3x3-BN-ReLU stem, three stages of ``blocks`` BasicBlocks (stride 2 entering stages 2 and 3),
    global average pool, linear classifier."""

    def __init__(self, input_shape, num_classes: int, blocks: int = 5, widths=(32, 64, 128), width: float = 1.0):
        super().__init__()
        widths = [scaled(w, width) for w in widths]
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_channels = [], widths[0]
        for i, w in enumerate(widths):
            stage = [BasicBlock(in_channels if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(blocks)]
            stages.append(nn.Sequential(*stage))
            in_channels = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))
