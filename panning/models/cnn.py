"""Small convolutional nets for the embedded data: a 1-D CNN for MNIST-1D and a 2-D CNN for 8x8 digits."""
from __future__ import annotations

from torch import nn

from .common import scaled


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class CNN1d(nn.Sequential):
    """The MNIST-1D authors' CNN: three Conv1d layers of 25 channels with stride 2 and padding 1 (kernels
    5, 3, 3), ReLU after each, then one linear classifier on the flattened features (25 x 5 for length 40)."""

    KERNELS = (5, 3, 3)

    def __init__(self, input_shape, num_classes: int, channels: int = 25, width: float = 1.0):
        in_channels, length = input_shape
        c = scaled(channels, width)
        layers: list[nn.Module] = []
        for kernel in self.KERNELS:
            layers += [nn.Conv1d(in_channels, c, kernel, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_channels, length = c, _conv_out(length, kernel, 2, 1)
            if length < 1:
                raise ValueError(f"input_shape {tuple(input_shape)} is too short for three stride-2 convolutions")
        layers += [nn.Flatten(), nn.Linear(c * length, num_classes)]
        super().__init__(*layers)


class CNN2d(nn.Sequential):
    """A small VGG-style 2-D CNN for 8x8 digits: [conv3x3-BN-ReLU] x2 -> maxpool -> [conv3x3-BN-ReLU] x2 ->
    global average pool -> linear. Widths 32 and 64 (times ``width``)."""

    def __init__(self, input_shape, num_classes: int, width: float = 1.0):
        in_channels = input_shape[0]
        layers: list[nn.Module] = []
        for i, c in enumerate((32, 32, 64, 64)):
            c = scaled(c, width)
            layers += [nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i == 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
        super().__init__(*layers)
