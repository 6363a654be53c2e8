"""``load_model``: checkpoint file -> evaluated model, its architecture, classifier layer and eval transform.

The architecture comes from ``arch=`` (any torchvision classification or timm model name), else from the
checkpoint's own record, else it is inferred by comparing the state_dict's parameter names and shapes with
the common families (``registry.INFERENCE_CANDIDATES``), built on the meta device (no memory, no weights).
A state_dict whose names differ but whose tensors match the model's one by one in order (e.g. the
efficientnet-lite0 package's weights for timm's ``tf_efficientnet_lite0``) is loaded by position.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from repanalysis.arrays import pick_device
from repanalysis.data.transforms import EvalTransform, transform_from_timm_config
from repanalysis.errors import CheckpointError, DataError, RepanalysisError
from repanalysis.models import registry
from repanalysis.models.blurpool import blurpool_targets, wrap_blurpool
from repanalysis.models.checkpoint import RawCheckpoint, read_checkpoint, sha256_of
from repanalysis.paths import as_path


@dataclass
class LoadedModel:
    """A model ready for inference, with what analyses need to know about it.

    model: nn.Module in eval mode. arch: the architecture name (as --arch takes it). family: 'resnet',
    'vit', 'deit', 'efficientnet', 'cnn', ... num_classes: K. classifier_name / classifier: the final
    nn.Linear whose input is the penultimate feature ('head+head_dist' for a model averaging two heads).
    transform: the eval EvalTransform (None for an in-memory module of no known architecture given none, see
    :func:`from_module`). notes: what loading did (inferred arch, stripped prefixes, positional load). ema: the
    weights are the checkpoint's EMA copy (``load_model(..., ema=True)``), not its live ones. name: a display
    name for a model without a checkpoint file of its own name (a hub model's id), else None.
    """

    model: nn.Module
    arch: str
    family: str
    num_classes: int
    classifier_name: str | None
    transform: EvalTransform | None
    checkpoint: Path | None = None
    sha256: str | None = None
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    ema: bool = False
    name: str | None = None

    @property
    def classifier(self) -> nn.Module | None:
        """The final linear layer (the first of them for a two-head model, ``classifier_name`` 'a+b')."""
        if self.classifier_name is None:
            return None
        return self.model.get_submodule(self.classifier_name.split("+")[0])

    def classifier_weights(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(W [K, D], b [K]) of the final linear layer as float32 numpy, or None.

        For a model averaging several heads (``classifier_name`` 'head+head_dist', features = the heads' inputs
        concatenated), W = [W_1, ..., W_n] / n and b = (b_1 + ... + b_n) / n, so that logits = features @ W.T + b.
        """
        if self.classifier_name is None:
            return None
        layers = [self.model.get_submodule(name) for name in self.classifier_name.split("+")]
        if not all(isinstance(layer, nn.Linear) for layer in layers):
            return None
        n = len(layers)
        ws, bs = [], []
        for layer in layers:
            w = layer.weight.detach().float().cpu()
            ws.append(w)
            bs.append(layer.bias.detach().float().cpu() if layer.bias is not None else torch.zeros(w.shape[0]))
        if n == 1:
            return ws[0].numpy(), bs[0].numpy()
        return (torch.cat(ws, dim=1) / n).numpy(), (torch.stack(bs).sum(0) / n).numpy()

    def with_classifier(self, name: str) -> "LoadedModel":
        """This model with its classifier named: ``name`` is the final nn.Linear ('head.fc'; 'a+b' for two
        averaged heads), whose input is the penultimate feature; K becomes its output count. DataError (listing
        the model's linear layers) when ``name`` is not one."""
        return dataclasses.replace(self, classifier_name=name, num_classes=_named_classifier(self.model, name))

    def describe(self) -> dict:
        return {"arch": self.arch, "family": self.family, "num_classes": self.num_classes,
                "classifier": self.classifier_name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "sha256": self.sha256, "ema": self.ema, "notes": list(self.notes)}


def find_classifier(model: nn.Module, num_classes: int | None = None) -> str | None:
    """Name of the final classification layer: timm's get_classifier(), else the last nn.Linear
    (with ``num_classes`` outputs when given).

    A timm model with two heads whose outputs it averages in eval mode (distilled DeiT, LeViT: get_classifier()
    returns ``(head, head_dist)``) gets both linear layers joined by ``+`` (``"head+head_dist"``): its logits
    are a linear function of the two heads' inputs concatenated (see :meth:`LoadedModel.classifier_weights`).
    """
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            head = get()
        except (NotImplementedError, AttributeError, TypeError):
            head = None
        heads = list(head) if isinstance(head, (tuple, list)) else [head]
        linears = [_the_linear(h) for h in heads]
        if linears and all(linear is not None for linear in linears):
            names = {id(module): name for name, module in model.named_modules()}
            if all(id(linear) in names for linear in linears):
                return "+".join(names[id(linear)] for linear in linears)
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (num_classes is None or module.out_features == num_classes):
            last = name
    return last


def _named_classifier(model: nn.Module, name) -> int:
    """K (output count) of the classifier ``name`` ('head.fc', or 'a+b' for two heads); DataError unless every
    part names an nn.Linear of ``model``."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    hint = f"its linear layers: {', '.join(linears[-6:])}" if linears else "it has no nn.Linear"
    if not isinstance(name, str) or not name:
        raise DataError(f"classifier must be the name of the model's final nn.Linear (a str); got {name!r} ({hint})")
    counts = set()
    for part in name.split("+"):
        try:
            layer = model.get_submodule(part)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Linear):
            what = "is no layer" if layer is None else f"is a {type(layer).__name__}"
            raise DataError(f"classifier {part!r} of {type(model).__name__} {what}; expected the name of its final "
                            f"nn.Linear ({hint})")
        counts.add(layer.out_features)
    if len(counts) != 1:
        raise DataError(f"classifier {name!r} joins linear layers of different output counts {sorted(counts)}; "
                        "expected heads with the same classes")
    return counts.pop()


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 of a module's weights: each state_dict entry's name, dtype, shape and bytes, in order (the same
    weights give the same hash on any device and in any memory format). The fingerprint of an in-memory model."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            continue
        h.update(f"{key}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def from_module(module: nn.Module, *, arch: str | None = None, classifier: str | None = None,
                transform: EvalTransform | None = None, class_names=None) -> LoadedModel:
    """An in-memory network (a notebook's ``nn.Module``) as a :class:`LoadedModel`, as a checkpoint of the same
    weights would load; the module is neither moved, copied nor switched to eval mode.

    arch: its architecture name (any torchvision / timm name); when None it is recognised (our SmallCNN, a timm
    model by its ``pretrained_cfg``, else the checkpoint inference on its state_dict's names and shapes), and a
    network matching none is recorded by its class name (family 'custom'). classifier: the final nn.Linear's
    name ('head.fc'), found as for checkpoints when None (timm's get_classifier(), else the last nn.Linear).
    transform: the eval transform for image paths; default the architecture's own (its timm data config, the
    torchvision ImageNet eval, the MNIST transform of SmallCNN), None for a network of no known architecture
    (``extract`` on a data set path then asks for ``transform=``). sha256: :func:`state_dict_sha256`;
    ``checkpoint`` is None.

    >>> lm = from_module(SmallCNN())           # doctest: +SKIP
    >>> lm.arch, lm.classifier_name, lm.num_classes, lm.checkpoint
    ('small_cnn', 'fc', 10, None)
    """
    if not isinstance(module, nn.Module):
        raise DataError(f"expected an nn.Module; got {type(module).__name__}")
    if isinstance(module, torch.jit.ScriptModule):
        raise DataError("a TorchScript module has no readable layers; expected a Python nn.Module (or load the "
                        "archive with load_model(path, trust=True))")
    if arch is not None and not isinstance(arch, str):
        raise DataError(f"arch must be a model name (str); got {type(arch).__name__} {arch!r}")
    if transform is not None and not isinstance(transform, EvalTransform):
        raise DataError(f"transform must be an EvalTransform; got {type(transform).__name__}")
    notes = ["in-memory nn.Module"]
    known = arch if arch is not None else _module_arch(module)
    family = "custom"
    if known is not None:
        try:
            family = registry.family_of(*registry.resolve_arch(known))
        except CheckpointError:     # a free-form label of the user's own network: no default transform
            pass
    if classifier is not None:
        k = _named_classifier(module, classifier)
    else:
        classifier = find_classifier(module)
        k = module.get_submodule(classifier.split("+")[0]).out_features if classifier else 0
    if transform is None and family != "custom":
        transform = _default_transform(known, module)
        notes.append(f"transform: the default of {known}")
    return LoadedModel(model=module, arch=known or type(module).__name__, family=family, num_classes=k,
                       classifier_name=classifier, transform=transform, checkpoint=None,
                       sha256=state_dict_sha256(module), class_names=list(class_names) if class_names else None,
                       notes=notes)


def _module_arch(module: nn.Module) -> str | None:
    """The registered architecture an in-memory network is: our SmallCNN, a timm model (its pretrained_cfg's
    architecture), else the one family whose parameter names and shapes its state_dict matches exactly."""
    from repanalysis.models.small_cnn import SmallCNN

    if isinstance(module, SmallCNN):
        return "small_cnn"
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture") and type(module).__module__.startswith("timm."):
        return registry.qualified("timm", cfg["architecture"])
    try:
        found, how = infer_arch(module.state_dict())
    except (CheckpointError, RuntimeError, TypeError, ValueError):
        return None
    return found if how == "exact" else None


def _the_linear(module) -> nn.Linear | None:
    """``module`` when it is an nn.Linear, or the one nn.Linear it ends with (timm's NormLinear: BatchNorm1d,
    Dropout, Linear); None otherwise."""
    if isinstance(module, nn.Linear):
        return module
    if not isinstance(module, nn.Module):
        return None
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    last = list(module.modules())[-1]
    return last if len(linears) == 1 and last is linears[0] else None


def _shapes(sd: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}


@lru_cache(maxsize=64)
def _signature(arch: str, num_classes: int, kwargs_items: tuple = (), blur: tuple = ()) -> tuple:
    """(ordered [(name, shape)], classifier name) of arch built on the meta device."""
    model = registry.create_model(arch, num_classes, meta=True, **dict(kwargs_items))
    if blur:
        wrap_blurpool(model, list(blur))
    return tuple(_shapes(model.state_dict()).items()), find_classifier(model, num_classes)


def _classes_for(arch: str, sd: dict, kwargs: dict, blur: tuple) -> int:
    """K read off the checkpoint at the architecture's classifier key (last 2-D tensor as fallback)."""
    default_k = 10 if registry.resolve_arch(arch)[0] == "local" else 1000
    _, head = _signature(arch, default_k, tuple(sorted(kwargs.items())), blur)
    key = f"{head.split('+')[0]}.weight" if head else None
    if key and key in sd and sd[key].ndim == 2:
        return int(sd[key].shape[0])
    two_d = [v for v in sd.values() if v.ndim == 2]
    if not two_d:
        raise CheckpointError("cannot find a classifier weight (no 2-D tensor) in the checkpoint")
    return int(two_d[-1].shape[0])


def _match(arch: str, sd: dict, kwargs: dict, blur: tuple) -> tuple[str | None, int, str]:
    """('exact' | 'ordered' | None, num_classes, reason) for arch against the state_dict."""
    k = _classes_for(arch, sd, kwargs, blur)
    expected, _ = _signature(arch, k, tuple(sorted(kwargs.items())), blur)
    expected = dict(expected)
    have = _shapes(sd)
    if expected == have:
        return "exact", k, ""
    if len(expected) == len(have) and list(expected.values()) == list(have.values()):
        return "ordered", k, ""
    return None, k, mismatch_summary(expected, have)


def mismatch_summary(expected: dict, have: dict, limit: int = 3) -> str:
    """First few missing / unexpected / mis-shaped keys, in one line."""
    missing = [k for k in expected if k not in have]
    unexpected = [k for k in have if k not in expected]
    shaped = [f"{k} {have[k]} vs {expected[k]}" for k in expected if k in have and have[k] != expected[k]]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (checkpoint vs model)", shaped)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or "parameter order differs"


def infer_arch(sd: dict) -> tuple[str, str]:
    """Name of the one candidate family whose parameters match ``sd`` (and how: exact/ordered).

    Raises CheckpointError naming the candidates when none or several match.
    """
    blur = tuple(blurpool_targets(sd))
    exact, ordered = [], []
    for source, name in registry.INFERENCE_CANDIDATES:
        arch = registry.qualified(source, name)
        kwargs = registry.LOCAL[name].kwargs_from_state_dict(sd) if source == "local" else {}
        try:
            how, _, _ = _match(arch, sd, kwargs, blur)
        except (CheckpointError, RuntimeError, TypeError, ValueError):
            continue
        (exact if how == "exact" else ordered if how == "ordered" else []).append(arch)
    found = exact or ordered
    if len(found) == 1:
        return found[0], ("exact" if exact else "ordered")
    if len(found) > 1:
        raise CheckpointError(f"architecture is ambiguous: the checkpoint fits {', '.join(found)}; pass --arch")
    names = ", ".join(registry.qualified(s, n) for s, n in registry.INFERENCE_CANDIDATES)
    raise CheckpointError(f"cannot infer the architecture: the checkpoint matches none of {names}; pass --arch "
                          "with a torchvision or timm model name")


def input_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first 2-D convolution (None when it has none)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


def _default_transform(arch: str, model: nn.Module, notes: list[str] | None = None) -> EvalTransform:
    """The eval transform for a checkpoint that records none: the architecture's own (timm config, torchvision
    ImageNet eval), with the channel count read off the first convolution's weight, so a 1-channel network
    gets grayscale input rather than RGB it cannot run on."""
    source, _ = registry.resolve_arch(arch)
    channels = input_channels(model)
    if source == "timm":
        from timm.data import resolve_data_config

        transform = transform_from_timm_config(resolve_data_config({}, model=model))
    elif source == "local":
        c = channels or 3
        if c == 1:   # the repanalysis demo CNNs: MNIST digits at their own size
            from repanalysis.models.small_cnn import mnist_transform

            transform = mnist_transform()
        else:        # local CNNs train on small images at their own size: no resize
            transform = EvalTransform(resolution=None, mean=(0.5,) * c, std=(0.5,) * c, channels=c)
    else:
        transform = EvalTransform()  # torchvision ImageNet eval: resize 256, centre crop 224, bilinear
    transform = _with_channels(transform, channels)
    if notes is not None:
        notes.append(_assumed_transform_note(transform))
    return transform


def _assumed_transform_note(transform: EvalTransform) -> str:
    return (f"no transform recorded in the checkpoint: {transform.channels}-channel input (from the first "
            f"convolution), resolution {transform.resolution or 'unchanged'}, mean "
            f"{', '.join(f'{m:g}' for m in transform.mean)}, std {', '.join(f'{v:g}' for v in transform.std)}"
            "; override with --resolution/--mean/--std")


def _with_channels(transform: EvalTransform, channels: int | None) -> EvalTransform:
    """``transform`` for a network with ``channels`` input channels: the mean of its per-channel statistics
    repeated when the count differs (e.g. a grayscale network given the RGB ImageNet transform)."""
    if channels is None or channels == transform.channels:
        return transform
    mean = (sum(transform.mean) / len(transform.mean),) * channels
    std = (sum(transform.std) / len(transform.std),) * channels
    return dataclasses.replace(transform, mean=mean, std=std, channels=channels)


def load_model(checkpoint: str | os.PathLike, arch: str | None = None, *, trust: bool = False,
               device: str | torch.device = "cpu", log=None, ema: bool = False) -> LoadedModel:
    """Load a checkpoint into its architecture and return a :class:`LoadedModel` in eval mode.

    checkpoint: .pth/.pt/.safetensors (any format of REFERENCE.md); or a model in timm's / the Hugging Face
    hub's saved layout (``config.json`` + ``model.safetensors``): a folder holding them, or ``"hf-hub:<org>/<name>"``
    read from the local hub cache only (see :mod:`repanalysis.models.hub`). arch: torchvision or timm model name
    (inferred when None); trust: allow pickled modules / TorchScript (runs code from the file).
    device: "cpu" (default), "auto" (CUDA when present), "cuda" or "cuda:N".
    ema: load the checkpoint's EMA weights (timm's ``state_dict_ema``, torchvision's / DeiT's ``model_ema``)
    instead of its live weights (the default); CheckpointError when it has none. ``LoadedModel.ema`` records it.

    Example::

        >>> lm = load_model("runs/ce.pth")             # doctest: +SKIP
        >>> lm.arch, lm.num_classes, lm.classifier_name # doctest: +SKIP
        ('small_cnn', 10, 'fc')
        >>> load_model("hf-hub:timm/resnet50.a1_in1k").transform.interpolation   # doctest: +SKIP
        'bicubic'
    """
    from repanalysis.models import hub

    if hub.is_hub_spec(checkpoint):
        return hub.load_hub_model(checkpoint, arch, device=device, log=log, ema=ema)
    path = as_path(checkpoint, "checkpoint")
    if hub.is_hub_folder(path):
        return hub.load_hub_model(path, arch, device=device, log=log, ema=ema)
    if arch is not None and not isinstance(arch, str):
        raise DataError(f"arch must be a model name (str); got {type(arch).__name__} {arch!r}")
    if not isinstance(ema, (bool, np.bool_)):
        raise DataError(f"ema must be True or False; got {type(ema).__name__} {ema!r}")
    device = pick_device(device)
    raw = read_checkpoint(path, trust=trust, ema=bool(ema))
    notes = list(raw.notes)
    sha = sha256_of(path)
    if raw.module is not None:
        return _from_module(raw, arch, sha, notes, device)
    if arch is None and raw.info.get("arch"):
        arch = raw.info["arch"]
        if not isinstance(arch, str):
            raise CheckpointError(f"checkpoint {path.name} records arch {arch!r} ({type(arch).__name__}); expected "
                                  "a model name, or pass --arch")
    try:
        built: list[str] = []
        model, arch, k = _build(raw.state_dict, arch, path, built, log)
        notes += built
    except CheckpointError as whole:
        # a Lightning checkpoint whose network sits beside other attributes (a loss's weights): the attribute
        # that fits, the largest first; none fitting -> the error about the whole state_dict
        for head, sub in raw.alternatives:
            tried: list[str] = []
            try:
                model, arch, k = _build(sub, arch, path, tried, log)
            except CheckpointError:
                continue
            others = ", ".join(h for h, _ in raw.alternatives if h != head)
            notes += [f"weights taken from the LightningModule's {head!r} attribute (left out: {others})", *tried]
            break
        else:
            raise whole from None
    model.eval().to(device)
    if raw.info.get("transform"):
        transform = _recorded_transform(raw.info["transform"], path)
    else:
        transform = _default_transform(arch, model, notes)
        if log:
            log(notes[-1])
    family = registry.family_of(*registry.resolve_arch(arch))
    return LoadedModel(model=model, arch=arch, family=family, num_classes=k,
                       classifier_name=find_classifier(model, k), transform=transform, checkpoint=path,
                       sha256=sha, class_names=raw.info.get("class_names"), notes=notes, ema=raw.ema)


def _build(sd: dict, arch: str | None, path: Path, notes: list[str], log) -> tuple[nn.Module, str, int]:
    """The architecture (``arch``, or inferred) built with the state_dict ``sd`` loaded: (model, arch, K).
    Raises CheckpointError when it does not fit; ``notes`` hears how it was loaded."""
    blur = tuple(blurpool_targets(sd))
    if blur:
        notes.append(f"FFCV BlurPool wrappers on {len(blur)} convolutions")
    if arch is None:
        arch, how = infer_arch(sd)
        notes.append(f"inferred architecture {arch} from the checkpoint's parameter names and shapes")
        if log:
            log(f"inferred architecture: {arch}")
    source, name = registry.resolve_arch(arch)
    kwargs = registry.LOCAL[name].kwargs_from_state_dict(sd) if source == "local" else {}
    how, k, reason = _match(arch, sd, kwargs, blur)
    if how is None:
        raise CheckpointError(f"checkpoint {path.name} does not fit architecture {arch}: {reason}")
    model = registry.create_model(arch, k, **kwargs)
    if blur:
        wrap_blurpool(model, list(blur))
    target = model.state_dict()
    if how == "ordered":
        names = [n for n in target if not n.endswith("num_batches_tracked")]
        values = [v for n, v in sd.items() if not n.endswith("num_batches_tracked")]
        sd = dict(zip(names, values))
        notes.append("parameter names differ from the architecture's; loaded by position (shapes all match)")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path.name} does not fit architecture {arch}: "
                              f"{mismatch_summary(dict.fromkeys(missing, ()), dict.fromkeys(unexpected, ()))}")
    return model, arch, k


def _recorded_transform(recorded, path: Path) -> EvalTransform:
    """The eval transform a checkpoint records; CheckpointError naming the checkpoint when it is unusable."""
    try:
        if not isinstance(recorded, dict):
            raise TypeError(f"a {type(recorded).__name__}, not a dict")
        return EvalTransform.from_dict(recorded)
    except (RepanalysisError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path.name} records an unusable transform ({str(exc).strip()[:160]}); "
                              "expected a dict of EvalTransform fields (resolution, mean, std, ...)") from None


def _from_module(raw: RawCheckpoint, arch: str | None, sha: str, notes: list[str], device) -> LoadedModel:
    model = raw.module.to(device).eval()
    classifier = None if raw.kind == "torchscript" else find_classifier(model)
    k = None
    if classifier is not None:
        k = model.get_submodule(classifier.split("+")[0]).out_features
    from repanalysis.models.small_cnn import SmallCNN

    # the transform of the architecture given, or of our own network pickled whole; else ImageNet eval
    known = None
    if raw.kind != "torchscript":
        try:             # arch may be a free-form label of the pickled network, not a registered name
            known = arch if arch is not None and registry.resolve_arch(arch) else None
        except CheckpointError:
            pass
        if known is None and isinstance(model, SmallCNN):
            known = "small_cnn"
    if known is not None:
        transform = _default_transform(known, model, notes)
    else:
        transform = _with_channels(EvalTransform(), input_channels(model))   # e.g. a pickled grayscale network
        notes.append(_assumed_transform_note(transform))
    return LoadedModel(model=model, arch=arch or type(model).__name__, family="custom", num_classes=k or 0,
                       classifier_name=classifier, transform=transform, checkpoint=raw.path, sha256=sha,
                       notes=notes)
