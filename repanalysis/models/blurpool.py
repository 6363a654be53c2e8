"""FFCV's BlurPool wrapper for strided convolutions (ResNets trained with FFCV's ``use_blurpool``).

Checkpoints hold ``<conv>.conv.weight`` and a ``<conv>.blur_filter`` buffer: a fixed 3x3 binomial blur applied
depthwise (stride 1, padding 1) before the original convolution. :func:`wrap_blurpool` wraps exactly the
convolutions that such a state_dict names, so the model's keys and its forward pass match the checkpoint.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BlurPoolConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
        self.conv = conv
        self.register_buffer("blur_filter", kernel.expand(conv.in_channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x, self.blur_filter, stride=1, padding=1, groups=self.conv.in_channels)
        return self.conv(blurred)


def blurpool_targets(state_dict: dict) -> list[str]:
    """Module names whose ``.blur_filter`` buffer is in the state_dict."""
    return [k[: -len(".blur_filter")] for k in state_dict if k.endswith(".blur_filter")]


def wrap_blurpool(model: nn.Module, names: list[str]) -> nn.Module:
    """Replace each named nn.Conv2d in ``model`` by a BlurPoolConv2d around it (in place)."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
        except AttributeError:  # not this architecture's layer: the shape comparison will say so
            continue
        conv = getattr(parent, child, None)
        if isinstance(conv, nn.Conv2d):
            setattr(parent, child, BlurPoolConv2d(conv))
    return model
