"""Features of several layers of one or more models on the same images, for layer-by-layer CKA.

Each layer's output is captured with the forward hook extraction uses (:class:`repanalysis.models.features.
FeatureTap`, in ``mode="output"``) and reduced to one vector per image. The reduction is a documented choice
(:data:`POOLING`): a feature map [B, C, H, W] is averaged over its H x W positions per channel (global average
pooling, as a ResNet's own head does, so the last stage of a ResNet gives exactly its penultimate features);
tokens [B, T, C] are averaged over the T tokens; a vector [B, D] is kept as it is (the classifier's output:
the logits). Flattening the maps instead would make the widths C*H*W (hundreds of thousands at 224 px) and
the CKA accumulators' D x D products impossible; pooling keeps memory bounded.

The CKA arithmetic lives in :mod:`repanalysis.analyze.cka`; this module only runs models::

    from repanalysis.extract.layers import iter_layer_features
    from repanalysis.analyze.cka import layer_cka_batches
    res = layer_cka_batches(iter_layer_features(["ce.pth", "ls.pth"], "data/", "auto", limit=2000),
                            names=("CE", "LS"))
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from repanalysis.arrays import check_number, pick_device
from repanalysis.errors import CheckpointError, DataError, RepanalysisError
from repanalysis.models.features import FeatureTap
from repanalysis.extract.runner import default_workers

POOLING = ("feature maps [B, C, H, W] averaged over H x W per channel (global average pooling); tokens [B, T, C] "
           "averaged over the T tokens; vectors [B, D] (the classifier's logits) kept as they are")


def pool_per_channel(value: torch.Tensor) -> torch.Tensor:
    """One vector per image of a layer's output (:data:`POOLING`): [B, C, H, W] -> mean over H, W; [B, T, C] ->
    mean over T; [B, D] unchanged; [B, C, ...] with more axes -> mean over every axis after C."""
    if value.ndim == 2:
        return value
    if value.ndim == 3:
        return value.mean(dim=1)
    if value.ndim >= 4:
        return value.flatten(2).mean(dim=2)
    raise RepanalysisError(f"a layer gave an output of shape {tuple(value.shape)}; expected [B, D], tokens "
                           "[B, T, C] or feature maps [B, C, H, W]")


class PooledTap(FeatureTap):
    """:class:`FeatureTap` on a layer's output, pooled per channel (:func:`pool_per_channel`) before it is kept:
    ``tap.value`` is [B, C]."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__(model, layer, mode="output")

    def _hook(self, position: int, inputs, output):
        value = output[0] if isinstance(output, (tuple, list)) else output
        super()._hook(position, inputs, pool_per_channel(value.detach()))


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_container(module: nn.Module) -> bool:
    return any(True for _ in module.children())


def auto_layers(model: nn.Module, classifier_name: str | None = None) -> list[str]:
    """The layers ``--layers auto`` compares: the model's stages, then its classifier.

    timm models name their stages (``feature_info``: ResNet ``act1, layer1, ..., layer4``). Otherwise the
    parametrised sub-modules that are themselves containers (ResNet ``layer1 .. layer4``; a single container
    such as ``features`` or ``encoder.layers`` is entered, giving ``features.0, features.1, ...``), the
    classifier and what holds it left out; the classifier (``classifier_name``, whose output is the logits)
    comes last.
    """
    skip = set()
    if classifier_name:
        for name in classifier_name.split("+"):
            parts = name.split(".")
            skip |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    if info is not None:
        try:
            names = [str(entry["module"]) for entry in info]
        except (TypeError, KeyError, IndexError):
            names = []
    if not names:
        prefix, module = "", model
        while True:
            kids = [(f"{prefix}{n}", m) for n, m in module.named_children()
                    if f"{prefix}{n}" not in skip and _has_params(m)]
            stages = [(n, m) for n, m in kids if _is_container(m)]
            if len(stages) == 1:
                prefix, module = stages[0][0] + ".", stages[0][1]
                continue
            if not stages:    # only leaves (a VGG's convolutions): the parametrised leaves but norm layers
                stages = [(n, m) for n, m in kids if not isinstance(m, (nn.modules.batchnorm._BatchNorm,
                                                                        nn.LayerNorm, nn.GroupNorm))]
            names = [n for n, _ in stages]
            break
    return [n for n in names if n not in skip] + ([classifier_name] if classifier_name else [])


def resolve_layers(model: nn.Module, layers, classifier_name: str | None = None) -> list[str]:
    """``layers`` ("auto", "layer1,layer2,fc" or a list of names) as a checked list of the model's layer names;
    CheckpointError naming the model's last layers for a name it does not have."""
    if isinstance(layers, str):
        if layers.strip() == "auto":
            found = auto_layers(model, classifier_name)
            if not found:
                raise CheckpointError("--layers auto found no stages in the model; name the layers (e.g. "
                                      "--layers layer1,layer2,fc)")
            return found
        layers = [part.strip() for part in layers.split(",")]
    layers = [str(name) for name in layers]
    if not layers or not all(layers):
        raise DataError(f"layers {layers!r} has an empty entry; expected layer names separated by commas, or auto")
    if len(set(layers)) != len(layers):
        raise DataError(f"layers {layers!r} names a layer twice; expected distinct layers")
    for name in layers:
        FeatureTap(model, name)          # CheckpointError with the model's last layers for an unknown name
    return layers


def iter_layer_features(checkpoints: Sequence, data, layers="auto", *, arch: str | None = None,
                        limit: int | None = None, batch_size: int = 64, device="auto", seed: int | None = None,
                        workers: int | None = None, layout: str = "auto", split: str | None = None,
                        class_order=None, trust: bool = False, ema: bool = False, transform=None,
                        log=None) -> Iterator[tuple[dict[str, torch.Tensor], ...]]:
    """Stream the pooled outputs of ``layers`` of each model, batch by batch, on the same images.

    checkpoints: checkpoint paths or LoadedModels (one or more; the same checkpoint twice compares a model with
    itself). data: a data set path (any layout of ``open_dataset``), opened with each model's own eval transform
    (``transform``: a dict of overrides, as ``--resolution`` & co.). layers: "auto" (:func:`auto_layers`, per
    model), "a,b,c" or a list, the same names for every model. limit: only the first N images. seed: None keeps
    the data set's order; an integer visits the (first ``limit``) images in ``np.random.default_rng(seed).
    permutation`` order (what minibatch CKA needs when the data set is sorted by class). Yields, per batch, one
    {layer: float32 tensor [b, C] on ``device``} per model, in the order of ``layers``; memory stays bounded.
    """
    from torch.utils.data import DataLoader, Subset

    from repanalysis.data.datasets import label_for_model, open_dataset
    from repanalysis.data.transforms import override_transform
    from repanalysis.models.loading import LoadedModel, load_model

    checkpoints = list(checkpoints)
    if not checkpoints:
        raise DataError("no models given; expected one or more checkpoints")
    batch_size = check_number(batch_size, "batch_size", integer=True, minimum=1)
    if limit is not None:
        limit = check_number(limit, "limit", integer=True, minimum=1)
    if seed is not None:
        seed = check_number(seed, "seed", integer=True, minimum=0)
    if workers is None:
        workers = default_workers()
    dev = pick_device(device)
    log = log or (lambda message: None)
    models, datasets, names = [], [], []
    for ckpt in checkpoints:
        lm = ckpt if isinstance(ckpt, LoadedModel) else load_model(ckpt, arch, trust=trust, device="cpu", ema=ema)
        model_transform = override_transform(lm.transform, **transform) if transform else lm.transform
        ds = open_dataset(data, layout=layout, transform=model_transform, split=split, class_order=class_order)
        if class_order is None:
            ds = label_for_model(ds, lm.num_classes, lm.class_names, log=log)
        names.append(resolve_layers(lm.model, layers, lm.classifier_name))
        models.append(lm)
        datasets.append(ds)
    for ds in datasets[1:]:
        if list(ds.samples) != list(datasets[0].samples):
            raise DataError("the models' data sets hold different images; expected the same images for every model")
    n = len(datasets[0]) if limit is None else min(limit, len(datasets[0]))
    if n == 0:
        raise DataError(f"data set {data} has no samples")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    # one loader per distinct transform: models that see the same pixels share the decoded batch
    keys = [repr(ds.transform.to_dict()) if hasattr(ds.transform, "to_dict") else id(ds) for ds in datasets]
    distinct = list(dict.fromkeys(keys))
    loaders = [DataLoader(Subset(datasets[keys.index(k)], order.tolist()), batch_size=batch_size, shuffle=False,
                          num_workers=workers, pin_memory=dev.type == "cuda") for k in distinct]
    modes = [(m, m.training) for lm in models for m in lm.model.modules()]
    taps = [[PooledTap(lm.model, name) for name in layer_names] for lm, layer_names in zip(models, names)]
    homes = [next(lm.model.parameters(), torch.empty(0)).device for lm in models]
    try:
        for lm in models:
            lm.model.to(dev).eval()
        for model_taps in taps:
            for tap in model_taps:
                tap.__enter__()
        log(f"layer features of {len(models)} model(s) on {n} images: " +
            "; ".join(f"{lm.name or (lm.checkpoint.stem if lm.checkpoint else lm.arch)}: {', '.join(ln)}"
                      for lm, ln in zip(models, names)))
        with torch.inference_mode():
            for batches in zip(*loaders):
                out = []
                for i, (lm, model_taps, k) in enumerate(zip(models, taps, keys)):
                    x = batches[distinct.index(k)][0].to(dev, non_blocking=True)
                    for tap in model_taps:
                        tap.value = None
                    try:
                        lm.model(x)
                    except RuntimeError as exc:
                        raise RepanalysisError(f"the model cannot run on this data (input {tuple(x.shape[1:])}): "
                                               f"{str(exc).strip().splitlines()[0][:200]}") from None
                    missing = [tap_name for tap, tap_name in zip(model_taps, names[i]) if tap.value is None]
                    if missing:
                        raise RepanalysisError(f"layer {missing[0]!r} did not run in the model's forward pass, so it "
                                               "gives no features; expected layers the forward pass goes through")
                    out.append({name: tap.value.float() for name, tap in zip(names[i], model_taps)})
                yield tuple(out)
    finally:
        for model_taps in taps:
            for tap in model_taps:
                tap.__exit__()
        for lm, home in zip(models, homes):
            lm.model.to(home)
        for module, training in modes:
            module.training = training


def layer_features(checkpoints: Sequence, data, layers="auto", **kwargs) -> list[dict[str, np.ndarray]]:
    """:func:`iter_layer_features` collected: one {layer: float32 array (N, C)} per model, row i from image i (of
    the visiting order). Holds every row in memory: use ``limit`` on a large data set, or stream the batches
    into :func:`repanalysis.analyze.cka.layer_cka_batches` instead."""
    parts: list[dict[str, list]] | None = None
    for batch in iter_layer_features(checkpoints, data, layers, **kwargs):
        if parts is None:
            parts = [{k: [] for k in feats} for feats in batch]
        for store, feats in zip(parts, batch):
            for k, v in feats.items():
                store[k].append(v.cpu().numpy())
    return [{k: np.concatenate(v) for k, v in store.items()} for store in (parts or [])]
