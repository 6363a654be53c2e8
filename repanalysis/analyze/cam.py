"""Class activation maps with pytorch-grad-cam: batched, one target per image, hooks always released.

Methods (``method=``, :data:`METHODS`), each the pytorch-grad-cam class of that name: "gradcam" (default),
"gradcam++", "xgradcam", "eigencam", "layercam", "hirescam", "gradcam-elementwise", "eigengradcam",
"scorecam", "ablationcam", "fullgrad", "kpcacam", "fem", "randomcam" (a random-weights baseline
for the faithfulness metrics; draws from numpy's global generator). Special cases:

- "fullgrad" uses no target layer: pytorch-grad-cam's FullGrad sums the input gradient x input and the
  gradient x bias of every Conv2d/BatchNorm2d with a bias, so the backward pass runs down to the input
  (no graph cut, slower, more memory) and ``layer`` is ignored (the layer is reported as "all-biases").
- "scorecam" runs one forward pass per channel of the target layer per image (512 for a ResNet-18's
  ``layer4``, 2048 for a ResNet-50's; in pytorch-grad-cam's own batches of 16) and "ablationcam" one per
  channel as well (in batches of 32): both are gradient-free and 100-1000x slower than Grad-CAM; keep
  ``batch_size`` small (it bounds the images per call, not their inner batches) and ``limit`` the data set.
- "kpcacam", "eigencam", "fem" and "randomcam" are class-agnostic: the target class does not change the map.
- Not offered: pytorch-grad-cam's meta-methods (FinerCAM, RefineCAM, SESS, which wrap a base method),
  SegEigenCAM (segmentation outputs), DeepFeatureFactorization (not a per-class map) and ShapleyCAM (its
  Hessian-vector product needs the parameters to require gradients, which CAM runs here switch off).

The target layer is found per family (REFERENCE.md "Grad-CAM
localisation"): ViT/DeiT (timm ``blocks[-1].norm1``, torchvision ``encoder.layers[-1].ln_1``) with the
patch tokens reshaped to the model's own grid and the CLS/distillation/register tokens dropped; any
other network: the last module of the last convolutional stage, i.e. the last module run in the forward
pass whose output is a feature map [N, C, H, W] with H, W > 1 (``layer4`` for ResNets, ``bn2`` for timm
EfficientNets, ``features`` for VGG/DenseNet/MobileNet). ``layer="name"`` overrides the choice.

Speed and memory: while CAMs are computed, the model's parameters are frozen and the target layer's
output is cut from the graph below it, so the backward pass runs only from the logits down to the target
layer (the gradient there is unchanged: it depends only on what comes after). Batches are processed one
at a time and only per-image numbers (plus a few CAMs to show) are kept over a whole data set.

Example::

    >>> out = compute_cams(model, images, targets=labels)         # images [N, 3, H, W], labels [N]
    >>> out.cams.shape                                             # (N, H, W), each in [0, 1]
"""
from __future__ import annotations

import contextlib
import io
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

import repanalysis  # noqa: F401  (applies the torchvision import fix before pytorch_grad_cam loads)
from repanalysis.analyze import localisation as loc
from repanalysis.analyze.boxacc import box_ious
from repanalysis.analyze.faithfulness import FAITHFULNESS_METRICS, faithfulness_scores
from repanalysis.analyze.cam_layers import (CamLayer, TokenGrid, _eval_mode, layer_candidates,  # noqa: F401
                                            resolve_cam_layer)
from repanalysis.arrays import as_labels, as_tensor, check_number, distinct_names, pick_device
from repanalysis.errors import ConfigError, DataError, RepanalysisError
from repanalysis.progress import progress_bar

# method name -> pytorch-grad-cam class name (the names users type; "-" and "_" are ignored when matching)
_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "eigencam": "EigenCAM",
            "layercam": "LayerCAM", "hirescam": "HiResCAM", "gradcam-elementwise": "GradCAMElementWise",
            "eigengradcam": "EigenGradCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM",
            "fullgrad": "FullGrad", "kpcacam": "KPCA_CAM", "fem": "FEM", "randomcam": "RandomCAM"}
METHODS = tuple(_CLASSES)
TARGET_MODES = ("gt", "pred")
NO_TARGET_LAYER = ("fullgrad",)        # methods reading every bias layer and the input gradient, not one layer
_NO_GRAPH_CUT = ("fullgrad",)  # needs gradients below the target layer, down to the input


def method_key(method: str) -> str:
    """The :data:`METHODS` name of ``method`` (case, "-" and "_" ignored; "plusplus" = "++"); DataError naming
    the valid methods for an unknown one."""
    def norm(m):
        return str(m).lower().replace("_", "").replace("-", "").replace("plusplus", "++")

    found = {norm(m): m for m in METHODS}.get(norm(method))
    if found is None:
        raise DataError(f"unknown CAM method {method!r}; expected one of {', '.join(METHODS)}")
    return found


def cam_class(method: str):
    """The pytorch-grad-cam class for ``method`` (one of :data:`METHODS`, case-insensitive)."""
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, _CLASSES[method_key(method)])


# --- CAMs for a batch of images --------------------------------------------------------------------------

@contextmanager
def _backward_stops_at(model: nn.Module, module: nn.Module | None):
    """Freeze the parameters and make ``module``'s output a fresh graph leaf, so that the forward pass
    below it records no graph and the backward pass stops there. Restores everything on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)

    def cut(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            # clone(): a non-leaf, so in-place ops after the layer (ReLU(inplace=True)) stay legal
            return output.detach().requires_grad_(True).clone()
        return None

    # registered before pytorch-grad-cam's hooks: they see the cut (module None: no cut, parameters frozen only)
    handle = module.register_forward_hook(cut) if module is not None else None
    try:
        with torch.enable_grad():
            yield
    finally:
        if handle is not None:
            handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)


def _shield_from_inplace(_module, _inputs, output):
    """Hand the layers after the target layer a copy of its output, so that an in-place op there (DenseNet's
    ``F.relu(features, inplace=True)``) cannot rewrite the activation pytorch-grad-cam keeps. pytorch-grad-cam
    stores ``output.cpu().detach()``, a copy on a GPU but the same memory on the CPU: without this copy a
    DenseNet's CAM on the CPU used the activation after the ReLU while its gradient is taken before it (and
    differed from the same CAM on a GPU). The CAM is that of the layer's own output on every device."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    return None


def _as_images(images, model: nn.Module) -> torch.Tensor:
    """images (tensor or numpy) -> [N, C, H, W] in the dtype of the model's parameters; DataError unless a
    non-empty batch of float pixels (normalised as the model's transform does)."""
    x = as_tensor(images)
    if x.ndim != 4:
        raise DataError(f"images must be a batch [N, C, H, W]; got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"no images: expected a batch [N, C, H, W] with N >= 1; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"images must be normalised float tensors, as produced by the model's transform; got "
                        f"{str(x.dtype).replace('torch.', '')} pixels")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return x.to(dtype)


def _as_targets(targets, num_images: int) -> torch.Tensor:
    """targets -> int64 [N]; DataError unless one integer class index >= 0 per image."""
    t = as_tensor(targets).reshape(-1)
    if t.shape[0] != num_images:
        raise DataError(f"need one target per image: {num_images} images, {t.shape[0]} targets")
    return as_labels(t, what="targets")


def _input_error(model: nn.Module, images: torch.Tensor, exc: Exception) -> DataError:
    """One-line DataError for a forward pass that failed on ``images``: the channel count when the first
    convolution's differs, else the first line of the error."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and images.shape[1] != conv.in_channels:
        return DataError(f"images have {images.shape[1]} channels but the model's first convolution expects "
                         f"{conv.in_channels}; expected images [N, {conv.in_channels}, H, W]")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DataError(f"the model failed on images of shape {tuple(images.shape)}: {first}")


@dataclass
class CamOutput:
    """CAMs of one batch. cams [N, H, W] float32 in [0, 1] (min-max per image, input resolution);
    logits [N, K]; targets [N] (class each CAM explains); layer: the CamLayer used."""

    cams: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    layer: CamLayer | None = None

    @property
    def preds(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)


class CamEngine:
    """pytorch-grad-cam bound to one model and layer; hooks live only inside ``with`` (released on exit).

    >>> with CamEngine(model, method="gradcam") as engine:
    ...     out = engine(images, targets)          # CamOutput
    """

    def __init__(self, model: nn.Module, method: str = "gradcam", layer: str | CamLayer | None = None,
                 example: torch.Tensor | None = None):
        self.model = model
        self.method = method_key(method)
        self.cam_cls = cam_class(method)
        if self.method in NO_TARGET_LAYER:       # FullGrad: every bias layer and the input, no target layer
            try:
                tokens = resolve_cam_layer(model, None, example).reshape_transform is not None
            except RepanalysisError:
                tokens = False
            if tokens:                           # pytorch-grad-cam's FullGrad sums bias gradients of conv maps
                raise DataError("fullgrad works on convolutional networks only (it sums the bias gradients of "
                                "[N, C, H, W] maps); this model's features are tokens: choose another method, e.g. "
                                "gradcam, hirescam or layercam")
            self.layer = CamLayer("all-biases", model, "fullgrad")
        else:
            self.layer = layer if isinstance(layer, CamLayer) else resolve_cam_layer(model, layer, example)
        self._stack = None
        self._cam = None

    def __enter__(self) -> "CamEngine":
        from contextlib import ExitStack

        self._stack = ExitStack()
        self._stack.enter_context(_eval_mode(self.model))   # CAMs in eval mode; the caller's modes come back
        if self.method in _NO_GRAPH_CUT:                    # gradients below the layer: only freeze parameters
            self._stack.enter_context(_backward_stops_at(self.model, None))
        else:
            self._stack.enter_context(_backward_stops_at(self.model, self.layer.module))
        if self.method in NO_TARGET_LAYER:
            with contextlib.redirect_stdout(io.StringIO()):     # FullGrad prints a warning for any target layer
                cam = self.cam_cls(model=self.model, target_layers=[])
            self._cam = self._stack.enter_context(cam)
            return self
        extra = {}
        if self.method == "ablationcam" and self.layer.reshape_transform is not None:
            from pytorch_grad_cam.ablation_layer import AblationLayerVit   # ablates token channels, not maps

            extra["ablation_layer"] = AblationLayerVit()
        self._cam = self._stack.enter_context(self.cam_cls(model=self.model, target_layers=[self.layer.module],
                                                           reshape_transform=self.layer.reshape_transform, **extra))
        shield = self.layer.module.register_forward_hook(_shield_from_inplace)  # after pytorch-grad-cam's hooks
        self._stack.callback(shield.remove)
        return self

    def __exit__(self, *exc) -> None:
        self._cam = None
        self._stack.close()  # pytorch-grad-cam's hooks first (LIFO), then ours; parameters restored
        self._stack = None

    def __call__(self, images: torch.Tensor, targets=None) -> CamOutput:
        """images [N, C, H, W]; targets [N] class indices (None: the predicted class). One
        ClassifierOutputTarget per image (a single target for a batch would leave the rest without gradient)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if self._cam is None:
            raise RepanalysisError("CamEngine was called outside its `with` block; expected "
                                   "`with CamEngine(model) as engine: engine(images, targets)`")
        images = _as_images(images, self.model)
        target_list = None
        if targets is not None:
            targets = _as_targets(targets, images.shape[0])
            target_list = [ClassifierOutputTarget(int(t)) for t in targets.tolist()]
        try:
            cams = self._cam(input_tensor=images, targets=target_list)
        except IndexError as exc:  # raised inside the call, not swallowed by pytorch-grad-cam's __exit__
            raise DataError(f"target class out of range for the model's outputs ({exc})") from None
        except ValueError as exc:  # pytorch-grad-cam: "Invalid grads / activation shape" for a non-spatial layer
            if "shape" not in str(exc).lower():
                raise
            raise ConfigError(f"layer {self.layer.name!r} gives no feature map [N, C, H, W] to compute a CAM on "
                              f"({str(exc).split('.')[0]}); pass a convolutional layer (--layer)") from None
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, AssertionError) as exc:  # the forward pass refused the input: channels, size
            raise _input_error(self.model, images, exc) from None
        logits = self._cam.outputs.detach().float().cpu()
        self._cam.outputs = None  # drop the graph now, not at the next batch
        self._cam.activations_and_grads.clear()
        if targets is None:
            targets = logits.argmax(dim=1)
        return CamOutput(torch.from_numpy(np.ascontiguousarray(cams, dtype=np.float32)), logits, targets.cpu(),
                         self.layer)


def compute_cams(model: nn.Module, images: torch.Tensor, targets=None, *, method: str = "gradcam",
                 layer: str | CamLayer | None = None, batch_size: int = 32, device=None) -> CamOutput:
    """CAMs of ``images`` [N, C, H, W] for ``targets`` [N] (None: predicted class), in batches.

    images: float pixels as the model's transform produces them (tensor or numpy; cast to the model's
    dtype); targets: class indices >= 0. Returns CamOutput with cams [N, H, W] in [0, 1].
    ``device``: "auto", "cpu", "cuda" or "cuda:N"; None keeps the model where it is.
    """
    batch_size = check_number(batch_size, "batch_size", integer=True, minimum=1)
    if device is not None:
        model = model.to(pick_device(device))
    images = _as_images(images, model)
    if targets is not None:
        targets = _as_targets(targets, images.shape[0])
    parts = []
    try:
        engine_ctx = CamEngine(model, method, layer, example=images[:1])
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, AssertionError) as exc:  # the probe forward pass refused the input: channels, size
        raise _input_error(model, images, exc) from None
    with engine_ctx as engine:
        for start in range(0, images.shape[0], batch_size):
            stop = start + batch_size
            parts.append(engine(images[start:stop], None if targets is None else targets[start:stop]))
    return CamOutput(torch.cat([p.cams for p in parts]), torch.cat([p.logits for p in parts]),
                     torch.cat([p.targets for p in parts]), engine.layer)


# --- a whole data set --------------------------------------------------------------------------------------

@dataclass
class CamExample:
    """One image kept for display: the pixels the model saw (uint8 [H, W, 3]), its CAM [H, W] float16,
    its region [H, W] bool, its boxes [M, 4] in model-input pixels (or None) and its scores."""

    name: str
    image: np.ndarray
    cam: np.ndarray
    region: np.ndarray
    boxes: np.ndarray | None
    label: int
    target: int
    pred: int
    precision: float
    recall: float


@dataclass
class LocalisationResult:
    """Localisation of one model over a data set (per-image arrays have one row per scored image).

    sample_names [N]; labels, targets, preds [N] int; precision, recall, f1, iou, energy, pr_area,
    region_fraction [N] float (NaN where undefined); pointing_hit [N] bool; thresholds [T] with
    pr_precision / pr_recall [T] (means over images); skipped: names of images without a region.
    """

    name: str
    method: str
    layer: str
    target_mode: str
    threshold: float
    topk: float | None
    sample_names: list[str]
    labels: np.ndarray
    targets: np.ndarray
    preds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    energy: np.ndarray
    pointing_hit: np.ndarray
    pr_area: np.ndarray
    region_fraction: np.ndarray
    thresholds: np.ndarray
    pr_precision: np.ndarray
    pr_recall: np.ndarray
    skipped: list[str] = field(default_factory=list)
    examples: list[CamExample] = field(default_factory=list)
    box_iou: np.ndarray | None = None       # [N, T] IoU of the largest component's box per threshold (v1)
    box_iou_v2: np.ndarray | None = None    # [N, T] best IoU over all components' boxes (MaxBoxAccV2)
    faithfulness: dict = field(default_factory=dict)  # FAITHFULNESS_METRICS -> [N] (when asked for)

    @property
    def num_images(self) -> int:
        return len(self.sample_names)

    def summary(self) -> dict:
        """Means over images (NaN-aware) and counts: the per-model table row."""
        def mean(a):
            a = np.asarray(a, dtype=np.float64)
            return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

        return {"model": self.name, "images": self.num_images, "skipped": len(self.skipped),
                "accuracy": mean(self.preds == self.labels) if self.num_images else float("nan"),
                "precision": mean(self.precision), "recall": mean(self.recall), "f1": mean(self.f1),
                "iou": mean(self.iou), "energy_pg": mean(self.energy), "pointing": mean(self.pointing_hit),
                "pr_area": mean(self.pr_area), "box_share": mean(self.region_fraction), **self.box_summary(),
                **{k: mean(v) for k, v in self.faithfulness.items()}}

    def box_summary(self) -> dict:
        """MaxBoxAcc (v1, delta 0.5; the default), its threshold, MaxBoxAccV2 and Top-1 Loc (boxacc.py); NaN
        without boxes (mask regions)."""
        from repanalysis.analyze.boxacc import box_accuracy

        if self.box_iou is None or self.num_images == 0:
            return {"maxboxacc": math.nan, "box_threshold": math.nan, "maxboxacc_v2": math.nan,
                    "top1_loc": math.nan}
        return box_accuracy(self.box_iou, self.box_iou_v2, self.thresholds, self.preds == self.labels)

    def to_frame(self):
        """Tidy pandas DataFrame of the :meth:`summary` numbers (the means over images accuracy, precision, recall,
        f1, iou, energy_pg, pointing, pr_area, box_share; maxboxacc, maxboxacc_v2, top1_loc; the faithfulness
        means when computed): columns model, metric, value, n (images scored)."""
        from repanalysis.frames import tidy_frame

        s = self.summary()
        return tidy_frame(self.name, {k: v for k, v in s.items()
                                      if k not in ("model", "images", "skipped", "box_threshold")},
                          n=self.num_images)

    def per_image_rows(self) -> list[dict]:
        cols = ("precision", "recall", "f1", "iou", "energy", "pr_area", "region_fraction")
        return [{"model": self.name, "image": self.sample_names[i], "label": int(self.labels[i]),
                 "target": int(self.targets[i]), "pred": int(self.preds[i]),
                 "pointing_hit": bool(self.pointing_hit[i]), **{c: float(getattr(self, c)[i]) for c in cols},
                 **{k: float(v[i]) for k, v in self.faithfulness.items()}}
                for i in range(self.num_images)]

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "layer": self.layer, "target": self.target_mode,
                "threshold": self.threshold, "topk": self.topk, "summary": self.summary(),
                "skipped": list(self.skipped),
                "pr_curve": {"thresholds": self.thresholds.tolist(), "precision": self.pr_precision.tolist(),
                             "recall": self.pr_recall.tolist()}}


def _image_size(dataset, index: int) -> tuple[int, int]:
    """(width, height) of the original image: from the file header when there is a file (no decoding)."""
    if hasattr(dataset, "image_size"):
        return tuple(dataset.image_size(index))
    path = dataset.path(index) if hasattr(dataset, "path") else None
    if path is not None:
        from PIL import Image

        try:
            with Image.open(path) as img:
                return img.size
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None
    if hasattr(dataset, "load_image"):
        return dataset.load_image(index).size
    raise DataError("the data set gives no original image sizes (needs .load_image(i) or .image_size(i)); "
                    "boxes cannot be mapped onto the model input")


def _sample_name(dataset, index: int) -> str:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return str(index)
    s = samples[index]
    return str(s[0] if isinstance(s, (tuple, list)) else s)


def localise_dataset(model: nn.Module, dataset, regions, transform=None, *, method: str = "gradcam",
                     layer: str | None = None, target: str = "gt", threshold: float = 0.5,
                     topk: float | None = None, thresholds: Sequence[float] | None = None,
                     batch_size: int = 32, limit: int | None = None, strict: bool = False,
                     keep: int = 8, workers: int = 0, device=None, name: str = "model",
                     progress: bool = False, faithfulness: bool = False) -> LocalisationResult:
    """Grad-CAM localisation of ``model`` over ``dataset`` against ``regions``, in bounded memory.

    dataset: items (image [C, H, W], label, index), ``samples`` names and ``load_image(i)`` (PIL).
    regions: a :class:`repanalysis.data.boxes.RegionSource` (boxes or masks) giving each image's object
    region in model-input pixels; ``transform``: the EvalTransform the dataset applies (for the boxes
    and the displayed pixels). Images without a region are skipped and counted (``strict``: DataError).
    target: "gt" (CAM of the true class) or "pred". keep: how many images to keep CAMs of for figures.
    workers: DataLoader worker processes decoding images. Memory: one batch of CAMs at a time, then
    per-image numbers only (O(N) floats) and ``keep`` CAMs. progress: a bar on stderr counting images (shown
    only when stderr is a terminal; :func:`repanalysis.progress.progress_bar`).
    Box accuracy (MaxBoxAcc, MaxBoxAccV2, Top-1 Loc; :mod:`repanalysis.analyze.boxacc`) is scored on the same
    threshold grid when the regions are boxes. faithfulness: also Average Drop / Increase in Confidence and
    ROAD per image (:mod:`repanalysis.analyze.faithfulness`; 1 + 36 extra forward passes per image: off by default).
    """
    if target not in TARGET_MODES:
        raise ConfigError(f"target must be one of {', '.join(TARGET_MODES)}; got {target!r}")
    loc.check_threshold(threshold)
    batch_size = check_number(batch_size, "batch_size", integer=True, minimum=1)
    if topk is not None and not 0.0 < float(topk) <= 1.0:
        raise DataError(f"top-k fraction must lie in (0, 1]; got {topk}")
    n_total = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n_total <= 0:
        raise DataError("the data set is empty; expected at least one image")
    # pair boxes with images over the whole data set, not only the first `limit`: catches ambiguous names
    all_names = [_sample_name(dataset, i) for i in range(len(dataset))]
    names = all_names[:n_total]
    has = np.asarray(regions.bind(all_names), dtype=bool)[:n_total]
    skipped = [names[i] for i in np.flatnonzero(~has)]
    if skipped and strict:
        raise DataError(f"{len(skipped)} of {n_total} images have no box or mask (first: {skipped[0]}); "
                        "expected one for every image (drop --strict to skip them)")
    indices = np.flatnonzero(has)
    if indices.size == 0:
        keys = getattr(regions, "boxes", None) or getattr(regions, "paths", None) or {}
        example = f" (first entry {next(iter(keys))!r}, first image {names[0]!r})" if keys else ""
        raise DataError(f"none of the {n_total} images has a box or mask in {regions.source}{example}; expected "
                        "entries named by the image's path relative to the data root or its file name")
    model = model.to(pick_device(device)) if device is not None else model
    thr = loc.default_thresholds() if thresholds is None else torch.as_tensor(thresholds, dtype=torch.float32)
    rows: dict[str, list] = {k: [] for k in _PER_IMAGE}
    curve = _MeanCurve(thr.numel())
    ious_v1, ious_v2, faith = [], [], []
    examples: list[CamExample] = []
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers)
    engine_ctx = CamEngine(model, method, layer, example=subset[0][0].unsqueeze(0))
    with engine_ctx as engine, progress_bar(len(indices), desc=f"{engine_ctx.method} {name}", unit="img",
                                               enabled=progress) as bar:
        for images, labels, index in loader:
            labels = labels.long()
            out = engine(images, labels if target == "gt" else None)
            out_hw = tuple(out.cams.shape[-2:])
            reg = [regions.region(names[i], int(y), _image_size(dataset, i), out_hw)
                   for i, y in zip(index.tolist(), labels.tolist())]
            masks = torch.from_numpy(np.stack([r.mask for r in reg]))
            scores = loc.localisation_scores(out.cams, masks, threshold=threshold, topk=topk, thresholds=thr)
            values = {"labels": labels, "targets": out.targets, "preds": out.preds, "pr_area": scores.sweep.area,
                      **{k: getattr(scores, k) for k in _PER_IMAGE[4:]}}
            for key in _PER_IMAGE:
                rows[key].append(values[key].cpu().numpy())
            curve.add(scores.sweep)
            v1, v2 = box_ious(out.cams.numpy(), [r.boxes for r in reg], thr.numpy())
            ious_v1.append(v1.astype(np.float32))
            ious_v2.append(v2.astype(np.float32))
            if faithfulness:
                device_images = _as_images(images, model).to(next(model.parameters()).device)
                with _eval_mode(model):
                    faith.append(faithfulness_scores(model, device_images, out.cams.numpy(), out.targets))
                engine._cam.activations_and_grads.clear()    # the metrics' forward passes went through the hooks
            for j in range(min(len(labels), keep - len(examples))):
                i = int(index[j])
                pixels = (np.asarray(transform.geometric(dataset.load_image(i)).convert("RGB"))
                          if transform is not None and hasattr(dataset, "load_image") else None)
                examples.append(CamExample(names[i], pixels, out.cams[j].numpy().astype(np.float16), reg[j].mask,
                                           reg[j].boxes, int(labels[j]), int(out.targets[j]), int(out.preds[j]),
                                           float(scores.precision[j]), float(scores.recall[j])))
            bar.update(len(labels))
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    mean_precision, mean_recall = curve.mean()
    return LocalisationResult(name=name, method=engine_ctx.method, layer=engine_ctx.layer.name, target_mode=target,
                              threshold=float(threshold), topk=topk, sample_names=[names[i] for i in indices],
                              **cat, thresholds=thr.numpy(), pr_precision=mean_precision, pr_recall=mean_recall,
                              skipped=skipped, examples=examples, box_iou=np.concatenate(ious_v1),
                              box_iou_v2=np.concatenate(ious_v2),
                              faithfulness={k: np.concatenate([f[k] for f in faith]) for k in FAITHFULNESS_METRICS}
                              if faith else {})


_PER_IMAGE = ("labels", "targets", "preds", "pr_area", "precision", "recall", "f1", "iou", "energy", "pointing_hit",
              "region_fraction")


class _MeanCurve:
    """Running NaN-aware means of the per-image precision and recall curves over the tau sweep."""

    def __init__(self, t: int):
        self.p_sum, self.p_cnt = torch.zeros(t, dtype=torch.float64), torch.zeros(t, dtype=torch.float64)
        self.r_sum, self.r_cnt = torch.zeros(t, dtype=torch.float64), torch.zeros(t, dtype=torch.float64)

    def add(self, sweep: loc.PRSweep) -> None:
        for total, count, values in ((self.p_sum, self.p_cnt, sweep.precision), (self.r_sum, self.r_cnt, sweep.recall)):
            finite = torch.isfinite(values)
            total += torch.where(finite, values, torch.zeros_like(values)).sum(0)
            count += finite.sum(0)

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        def avg(total, count):
            return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan)).numpy()

        return avg(self.p_sum, self.p_cnt), avg(self.r_sum, self.r_cnt)


def localise_checkpoints(checkpoints, data, boxes=None, *, names=None, arch: str | None = None,
                         layout: str = "auto", split: str | None = None, class_order=None, synsets=None,
                         trust_checkpoint: bool = False, device=None, log: Callable[[str], None] | None = None,
                         transform=None, progress: bool = True, ema: bool = False,
                         **kwargs) -> tuple[list[LocalisationResult], list[str] | None]:
    """:func:`localise_dataset` for each checkpoint on one data set: what ``repanalysis gradcam`` runs.

    checkpoints: paths (model names from ``names``, default the file stems, which must be distinct); data: a
    data set path (any layout of :func:`repanalysis.open_dataset`); boxes: LOC_val_solution.csv, a VOC XML
    folder, a 'path,x0,y0,x1,y1' list or a folder of PNG masks (default: the data set's own LOC file). Each
    model gets its own eval transform; folders named by WordNet id or by the model's classes are labelled with
    the model's indices unless ``class_order`` is given. ``kwargs`` go to :func:`localise_dataset` (method,
    layer, target, threshold, topk, batch_size, limit, strict, keep, workers). A flat ImageNet-val folder
    holding only some of the images its labels file lists is localised on those present (one warning);
    ``strict`` refuses it, as it refuses an image without a box.
    transform: None (each model's own eval transform); a dict of overrides applied to each model's own
    transform (keys resolution, crop_ratio, interpolation, mean, std, as ``--resolution`` & co.; see
    :func:`repanalysis.data.transforms.override_transform`), e.g. ``{"resolution": 288, "crop_ratio": 1.0}``;
    or an EvalTransform used as it is for every model. The images, the boxes/masks and the displayed pixels
    all go through that one transform, so boxes land where the model saw the object.
    progress: a bar on stderr per model, counting images (only when stderr is a terminal).
    ema: load each checkpoint's EMA weights instead of its live ones (see :func:`repanalysis.load_model`).
    Returns (one result per checkpoint, the data set's class names).
    """
    from collections.abc import Mapping
    from pathlib import Path

    from repanalysis.data.boxes import boxes_beside, open_regions
    from repanalysis.data.datasets import label_for_model, open_dataset
    from repanalysis.data.transforms import (TRANSFORM_OVERRIDES, EvalTransform, check_transform_overrides,
                                             override_transform)
    from repanalysis.models.loading import load_model
    from repanalysis.text import display_text

    checkpoints = list(checkpoints)
    names = distinct_names([display_text(Path(c).stem) for c in checkpoints], names, "checkpoints")
    log = log or (lambda message: None)
    if not isinstance(transform, (EvalTransform, Mapping, type(None))):
        raise ConfigError(f"transform must be None, a dict of overrides ({', '.join(TRANSFORM_OVERRIDES)}) or an "
                          f"EvalTransform; got {type(transform).__name__}")
    overrides = None if isinstance(transform, EvalTransform) else dict(transform or {})
    if overrides is not None:
        unknown = sorted(set(overrides) - set(TRANSFORM_OVERRIDES))
        if unknown:
            raise ConfigError(f"unknown transform override {unknown[0]!r}; expected some of "
                              f"{', '.join(TRANSFORM_OVERRIDES)}")
        check_transform_overrides(**overrides)          # bad values stop here, before a checkpoint is read
    limit = kwargs.get("limit")
    results, class_names = [], None
    for ckpt, name in zip(checkpoints, names):
        lm = load_model(ckpt, arch, trust=trust_checkpoint, device=device, ema=ema)
        model_transform = transform if overrides is None else override_transform(lm.transform, **overrides)
        ds = open_dataset(data, layout=layout, transform=model_transform, split=split, class_order=class_order,
                          synsets_file=synsets, strict=bool(kwargs.get("strict", False)))
        if class_order is None:      # WordNet-id folders or folders named after its classes: the model's labels
            ds = label_for_model(ds, lm.num_classes, lm.class_names, log=log)
        regions = open_regions(boxes or boxes_beside(ds), model_transform, synset_mapping=synsets,
                               class_wnids=ds.wnids)
        log(f"{name}: {lm.arch}, {kwargs.get('method', 'gradcam')} on "
            f"{len(ds) if limit is None else min(limit, len(ds))} images ...")
        result = localise_dataset(lm.model, ds, regions, model_transform, device=device, name=name,
                                  progress=progress, **kwargs)
        if result.skipped:
            log(f"{name}: skipped {len(result.skipped)} images without a box (first: {result.skipped[0]})")
        results.append(result)
        class_names = class_names or ds.class_names
    return results, class_names
