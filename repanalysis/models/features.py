"""Penultimate features: the exact input of the final classifier, captured with a forward hook."""
from __future__ import annotations

import torch
from torch import nn

from repanalysis.errors import CheckpointError


def layer_candidates(model: nn.Module, limit: int = 8) -> list[str]:
    """The last few named leaf modules, for 'did you mean' messages."""
    names = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    return names[-limit:]


class FeatureTap:
    """Context manager that records a layer's input (``mode="input"``, default for the classifier) or output.

    Example::

        with FeatureTap(model, "fc") as tap:
            logits = model(x)
        features = tap.value            # [B, D], so that model.fc(features) == logits

    ``layer`` may name several layers joined by ``+`` (``"head+head_dist"``: a distilled DeiT's or LeViT's two
    heads, whose outputs the model averages): the value is their inputs concatenated along the feature axis,
    in the order named.
    """

    def __init__(self, model: nn.Module, layer: str, mode: str = "input"):
        self.modules = []
        for name in layer.split("+"):
            try:
                self.modules.append(model.get_submodule(name))
            except AttributeError:
                raise CheckpointError(f"no layer named {name!r} in the model; last layers are: "
                                      f"{', '.join(layer_candidates(model))}") from None
        self.module = self.modules[0]
        self.mode = mode
        self.value: torch.Tensor | None = None
        self._parts: list = [None] * len(self.modules)
        self._handles: list = []

    def _hook(self, position: int, inputs, output):
        value = inputs[0] if self.mode == "input" else output
        if isinstance(value, (tuple, list)):
            value = value[0]
        self._parts[position] = value.detach().flatten(1)
        if all(part is not None for part in self._parts):      # every named layer has run on this batch
            self.value = self._parts[0] if len(self._parts) == 1 else torch.cat(self._parts, dim=1)
            self._parts = [None] * len(self._parts)

    def __enter__(self) -> "FeatureTap":
        self._parts = [None] * len(self.modules)
        for position, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(
                lambda _module, inputs, output, position=position: self._hook(position, inputs, output)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
