"""Small CNNs that train in seconds on 2 CPU cores, for real demo and test checkpoints."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv blocks -> global average pool -> linear classifier ``fc``.

    Input [B, in_chans, H, W] (28x28 MNIST by default); the penultimate feature is the pooled
    ``width*4``-dim vector (non-negative, after ReLU, like a ResNet's), the exact input of ``fc``.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 16):
        super().__init__()

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.features = nn.Sequential(block(in_chans, width, True), block(width, width * 2, True),
                                      block(width * 2, width * 4, False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mnist_transform():
    """The eval transform of the demo models: 28x28 grayscale, no resize, MNIST mean/std."""
    from repanalysis.data.transforms import EvalTransform

    return EvalTransform(resolution=None, mean=(MNIST_MEAN,), std=(MNIST_STD,), channels=1)
