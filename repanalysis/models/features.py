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
    """

    def __init__(self, model: nn.Module, layer: str, mode: str = "input"):
        try:
            self.module = model.get_submodule(layer)
        except AttributeError:
            raise CheckpointError(f"no layer named {layer!r} in the model; last layers are: "
                                  f"{', '.join(layer_candidates(model))}") from None
        self.mode = mode
        self.value: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, inputs, output):
        value = inputs[0] if self.mode == "input" else output
        if isinstance(value, (tuple, list)):
            value = value[0]
        self.value = value.detach().flatten(1)

    def __enter__(self) -> "FeatureTap":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
