"""Architectures by name: our own small CNN, then any torchvision classification model, then any timm model.

``create_model(arch, num_classes, **kwargs)`` builds an un-initialised-weights model (random init, or on
the meta device for cheap shape checks). ``INFERENCE_CANDIDATES`` are the common families that
``infer_arch`` tries when a checkpoint does not say what it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from repanalysis.errors import CheckpointError


@dataclass(frozen=True)
class ArchSpec:
    """A locally registered architecture: how to build it and how to read its kwargs off a state_dict."""

    build: Callable[..., nn.Module]
    family: str
    kwargs_from_state_dict: Callable[[dict], dict] = field(default=lambda sd: {})


def _small_cnn(num_classes: int = 10, **kwargs) -> nn.Module:
    from repanalysis.models.small_cnn import SmallCNN

    return SmallCNN(num_classes=num_classes, **kwargs)


def _small_cnn_kwargs(sd: dict) -> dict:
    w = sd.get("features.0.0.weight")
    return {} if w is None else {"width": int(w.shape[0]), "in_chans": int(w.shape[1])}


LOCAL: dict[str, ArchSpec] = {
    "small_cnn": ArchSpec(_small_cnn, "cnn", _small_cnn_kwargs),
}

# Families tried by infer_arch, as (source, name). Distinct sources because torchvision and timm name
# the same network's parameters differently.
INFERENCE_CANDIDATES: list[tuple[str, str]] = [
    ("local", "small_cnn"),
    *[("torchvision", f"resnet{d}") for d in (18, 34, 50, 101, 152)],
    ("torchvision", "mobilenet_v2"), ("torchvision", "vit_b_16"), ("torchvision", "efficientnet_b0"),
    # timm ResNets are left out: their parameter names and forward pass equal torchvision's.
    *[("timm", n) for n in ("mobilenetv2_100", "deit_tiny_patch16_224",
                            "deit_small_patch16_224", "deit_base_patch16_224", "vit_base_patch16_224",
                            "efficientnet_b0", "tf_efficientnet_lite0")],
]


def qualified(source: str, name: str) -> str:
    """The name users pass to --arch: plain for local/torchvision, 'timm/<name>' only when needed."""
    return name if source in ("local", "torchvision") else f"timm/{name}"


def resolve_arch(arch: str) -> tuple[str, str]:
    """'resnet50' -> ('torchvision', 'resnet50'); 'timm/resnet50' or a timm-only name -> ('timm', ...)."""
    if arch.startswith("timm/"):
        return "timm", arch[5:]
    if arch.startswith("torchvision/"):
        return "torchvision", arch[12:]
    if arch in LOCAL:
        return "local", arch
    import torchvision.models as tvm

    if arch in tvm.list_models(module=tvm):
        return "torchvision", arch
    import timm

    if timm.is_model(arch):
        return "timm", arch
    import difflib

    names = list(LOCAL) + tvm.list_models(module=tvm) + timm.list_models()
    close = list(dict.fromkeys(difflib.get_close_matches(arch, names, n=6, cutoff=0.6)))[:4]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise CheckpointError(f"unknown architecture {arch!r}: not a torchvision classification model or timm "
                          f"model name{hint}")


def family_of(source: str, name: str) -> str:
    if source == "local":
        return LOCAL[name].family
    lowered = name.lower()
    for key in ("deit", "vit", "efficientnet", "mobilenet", "resnet", "convnext", "swin", "regnet", "densenet",
                "vgg"):
        if key in lowered:
            return key
    return "other"


def create_model(arch: str, num_classes: int, *, meta: bool = False, **kwargs) -> nn.Module:
    """Build ``arch`` with ``num_classes`` outputs and no pretrained weights (never downloads).

    meta=True builds on the meta device (no memory, for comparing parameter names and shapes).
    """
    source, name = resolve_arch(arch)

    def build():
        if source == "local":
            return LOCAL[name].build(num_classes=num_classes, **kwargs)
        if source == "torchvision":
            import torchvision.models as tvm

            return tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

    if meta:
        with torch.device("meta"):
            return build()
    return build()
