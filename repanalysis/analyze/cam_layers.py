"""Grad-CAM target layers: which module's output a CAM is taken from, per family (REFERENCE.md "Grad-CAM
localisation"). ViT/DeiT (timm ``blocks[-1].norm1``, torchvision ``encoder.layers[-1].ln_1``) with the patch
tokens reshaped to the model's own grid and the CLS/distillation/register tokens dropped; any other network: the
last module run in the forward pass whose output is a feature map [N, C, H, W] with H, W > 1. ``layer="name"``
overrides the choice (:func:`resolve_cam_layer`)."""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from repanalysis.errors import ConfigError


class TokenGrid:
    """ViT reshape transform: tokens [B, T, C] -> feature map [B, C, gh, gw], dropping the first
    ``prefix`` tokens (CLS, distillation, register tokens)."""

    def __init__(self, prefix: int, grid: tuple[int, int]):
        self.prefix, self.grid = int(prefix), (int(grid[0]), int(grid[1]))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            raise ConfigError(f"ViT target layer must output tokens [B, T, C]; got shape {tuple(tokens.shape)}")
        gh, gw = self.grid
        patches = tokens[:, self.prefix:, :]
        if patches.shape[1] != gh * gw:
            raise ConfigError(f"ViT layer gives {patches.shape[1]} patch tokens after dropping {self.prefix} "
                              f"prefix tokens; expected a {gh}x{gw} grid ({gh * gw}); is the input size "
                              "the one the model was built for?")
        return patches.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokenGrid(prefix={self.prefix}, grid={self.grid})"


def _channels_last_to_first(x: torch.Tensor) -> torch.Tensor:
    """NHWC feature maps (timm Swin & co. with ``output_fmt='NHWC'``) -> NCHW."""
    return x.permute(0, 3, 1, 2)


@dataclass
class CamLayer:
    """The layer a CAM is read from: dotted ``name``, the ``module``, the ``family`` rule that chose it
    ('vit', 'cnn' or 'user') and the reshape transform turning its output into [B, C, h, w] (or None)."""

    name: str
    module: nn.Module
    family: str
    reshape_transform: Callable | None = None


def _timm_vit(model: nn.Module) -> CamLayer | None:
    blocks, patch_embed = getattr(model, "blocks", None), getattr(model, "patch_embed", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0 or patch_embed is None:
        return None
    if not hasattr(blocks[-1], "norm1") or getattr(patch_embed, "grid_size", None) is None:
        return None
    prefix = getattr(model, "num_prefix_tokens", None)
    if prefix is None:  # older timm: count the CLS and distillation tokens that exist
        prefix = sum(getattr(model, t, None) is not None for t in ("cls_token", "dist_token"))
    return CamLayer(f"blocks.{len(blocks) - 1}.norm1", blocks[-1].norm1, "vit",
                    TokenGrid(prefix, tuple(patch_embed.grid_size)))


def _torchvision_vit(model: nn.Module) -> CamLayer | None:
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if layers is None or not hasattr(model, "patch_size") or not hasattr(model, "image_size"):
        return None
    grid = model.image_size // model.patch_size
    return CamLayer(f"encoder.layers.{len(layers) - 1}.ln_1", layers[-1].ln_1, "vit", TokenGrid(1, (grid, grid)))


_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@contextmanager
def _eval_mode(model: nn.Module):
    """``model`` in eval mode inside, each module's own train/eval mode restored on the way out."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _feature_map_modules(model: nn.Module, example: torch.Tensor, channels_last: bool) -> list[str]:
    """Names of modules, in the order their forward finished, that output a feature map with H, W > 1
    and run exactly once (a probe forward pass on ``example``)."""
    names = {m: n for n, m in model.named_modules() if n}
    order, calls, handles = [], {}, []

    def hook(module, _inputs, output):
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, torch.Tensor) and output.ndim == 4 and not isinstance(module, _PASS_THROUGH):
            h, w = (output.shape[1], output.shape[2]) if channels_last else (output.shape[2], output.shape[3])
            if h > 1 and w > 1:
                order.append(module)

    for module in names:
        handles.append(module.register_forward_hook(hook))
    try:
        with _eval_mode(model), torch.no_grad():      # a probe: no batch-norm statistics updated
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [names[m] for m in order if calls[m] == 1]


def _example_input(model: nn.Module, example: torch.Tensor | None) -> torch.Tensor:
    device = next(model.parameters()).device
    if example is not None:
        return example[:1].to(device)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError(f"cannot find a CAM layer automatically in {type(model).__name__}: it has no "
                          "Conv2d and no ViT blocks; pass a layer name (--layer)")
    return torch.zeros(1, conv.in_channels, 224, 224, device=device)


_FAMILY_RULES: tuple[Callable[[nn.Module], CamLayer | None], ...] = (_timm_vit, _torchvision_vit)


def layer_candidates(model: nn.Module, limit: int | None = None) -> list[str]:
    """Dotted names of the model's modules (what ``layer=`` accepts), last first (later = more semantic)."""
    names = [n for n, _ in model.named_modules() if n][::-1]
    return names if limit is None else names[:limit]


def resolve_cam_layer(model: nn.Module, layer: str | None = None,
                      example: torch.Tensor | None = None) -> CamLayer:
    """Choose the CAM target layer of ``model`` (rules in the module docstring), or look up ``layer`` by name.

    example: one input batch [n, C, H, W] used for a probe forward pass on CNNs (default: zeros of
    224x224 with the first conv's channels). Raises ConfigError naming close candidates when ``layer``
    does not exist, and when no layer can be found automatically.
    """
    family_layer = next((found for found in map(lambda rule: rule(model), _FAMILY_RULES) if found is not None), None)
    channels_last = getattr(model, "output_fmt", None) in ("NHWC", "nhwc")
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            close = difflib.get_close_matches(layer, list(modules), n=5, cutoff=0.4)
            shown = close or _layers_with_maps(model, example, family_layer, channels_last) or layer_candidates(model, 8)
            raise ConfigError(f"layer {layer!r} not found in {type(model).__name__}; candidates: "
                              f"{', '.join(shown)}")
        transform = family_layer.reshape_transform if family_layer is not None else None
        if channels_last and transform is None:
            transform = _channels_last_to_first
        chosen = CamLayer(layer, modules[layer], "user", transform)
        _check_feature_map(model, chosen, example, family_layer, channels_last)
        return chosen
    if family_layer is not None:
        return family_layer
    found = _feature_map_modules(model, _example_input(model, example), channels_last)
    if not found:
        raise ConfigError(f"cannot find a CAM layer automatically in {type(model).__name__}: no module outputs "
                          "a feature map [N, C, H, W] with H, W > 1 and it is not a ViT; pass a layer name "
                          f"(--layer), e.g. one of {', '.join(layer_candidates(model, 6))}")
    name = found[-1]
    return CamLayer(name, dict(model.named_modules())[name], "cnn",
                    _channels_last_to_first if channels_last else None)


def _layers_with_maps(model: nn.Module, example, family_layer: CamLayer | None, channels_last: bool) -> list[str]:
    """:func:`_suitable_layers` on the example input (none when no example can be made): a hint only."""
    try:
        return _suitable_layers(model, _example_input(model, example), family_layer, channels_last)
    except ConfigError:
        return []


def _suitable_layers(model: nn.Module, example: torch.Tensor, family_layer: CamLayer | None,
                     channels_last: bool, n: int = 5) -> list[str]:
    """A few layer names that give feature maps, last (most semantic) first."""
    if family_layer is not None:
        return [family_layer.name]
    try:
        return _feature_map_modules(model, example, channels_last)[-n:][::-1]
    except Exception:  # noqa: BLE001  (only a hint for an error message)
        return []


def _check_feature_map(model: nn.Module, layer: CamLayer, example: torch.Tensor | None,
                       family_layer: CamLayer | None, channels_last: bool) -> None:
    """Raise ConfigError unless ``layer`` runs once per forward pass and gives a feature map [N, C, H, W]
    (after its reshape transform) with more than one pixel: what a CAM is computed on. A probe forward pass
    on ``example`` (skipped when no example input can be made)."""
    try:
        probe = _example_input(model, example)
    except ConfigError:
        return
    outputs: list = []
    handle = layer.module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        with _eval_mode(model), torch.no_grad():
            model(probe)
    finally:
        handle.remove()
    problem = None
    if not outputs:
        problem = "is not run in the model's forward pass"
    elif len(outputs) > 1:
        problem = f"runs {len(outputs)} times in one forward pass (a shared module)"
    elif not isinstance(outputs[0], torch.Tensor):
        problem = f"outputs a {type(outputs[0]).__name__}, not a tensor"
    else:
        fmap = outputs[0]
        if layer.reshape_transform is not None:
            try:
                fmap = layer.reshape_transform(fmap)
            except (ConfigError, RuntimeError, IndexError) as exc:
                problem = f"outputs shape {tuple(outputs[0].shape)}, which is not a token grid ({exc})"
        if problem is None and fmap.ndim != 4:
            problem = f"outputs shape {tuple(outputs[0].shape)}"
        elif problem is None and fmap.shape[2] * fmap.shape[3] == 1:
            problem = (f"outputs a 1x1 map {tuple(outputs[0].shape)}, so its CAM is constant (a pooling or "
                       "classifier layer)")
    if problem is not None:
        suitable = _suitable_layers(model, probe, family_layer, channels_last)
        hint = f"; suitable layers (last first): {', '.join(suitable)}" if suitable else ""
        raise ConfigError(f"layer {layer.name!r} ({type(layer.module).__name__}) {problem}; expected a "
                          f"layer whose output is a feature map [N, C, H, W] with H, W > 1{hint}")


