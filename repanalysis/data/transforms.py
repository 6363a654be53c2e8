"""Evaluation transforms: resize the short side, centre-crop, normalise; and the same geometry for boxes.

The transform is a small dataclass so that its parameters go into a Dump's meta.json and Grad-CAM can
map boxes through exactly the resize and crop the image went through (x = columns, y = rows).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from repanalysis.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
                   "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


@dataclass(frozen=True)
class EvalTransform:
    """PIL image -> normalised float tensor [C, H, W].

    resolution: side of the square centre crop fed to the model (None: keep the image size, no resize).
    crop_ratio: resize the short side to round(resolution / crop_ratio) before cropping (timm's
    ``crop_pct``; 0.875 gives the classic 256 -> 224). channels: 3 converts to RGB, 1 to grayscale.
    """

    resolution: int | None = 224
    crop_ratio: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        _check_interpolation(self.interpolation)
        if not 0 < self.crop_ratio <= 1:
            raise DataError(f"crop ratio must be in (0, 1]; got {self.crop_ratio}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise DataError(f"mean/std need {self.channels} values for {self.channels}-channel input; "
                            f"got {len(self.mean)} and {len(self.std)}")
        _check_normalisation(self.mean, self.std)

    # --- geometry ---------------------------------------------------------------------------------
    def resize_size(self, width: int, height: int) -> tuple[int, int]:
        """(new_width, new_height) after resizing the short side to round(resolution / crop_ratio)."""
        if self.resolution is None:
            return width, height
        short = int(math.floor(self.resolution / self.crop_ratio + 1e-6))
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the centre crop in resized-image pixels."""
        rw, rh = self.resize_size(width, height)
        if self.resolution is None:
            return 0, 0, rw, rh
        return self._crop_in_resized(rw, rh)

    def map_boxes(self, boxes, width: int, height: int) -> np.ndarray:
        """Map boxes [M, 4] (x0, y0, x1, y1 in original pixels) to model-input pixels, clipped to the crop.

        Boxes that fall wholly outside the crop come back with zero area (x0 == x1 or y0 == y1).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        rw, rh = self.resize_size(width, height)
        sx, sy = rw / width, rh / height
        left, top, right, bottom = self.crop_box(width, height)
        out = np.empty_like(boxes)
        out[:, [0, 2]] = boxes[:, [0, 2]] * sx - left
        out[:, [1, 3]] = boxes[:, [1, 3]] * sy - top
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, right - left)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, bottom - top)
        return out

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the tensor this transform produces for an image of the given size."""
        left, top, right, bottom = self.crop_box(width, height)
        return right - left, bottom - top

    # --- pixels -----------------------------------------------------------------------------------
    def geometric(self, image: Image.Image) -> Image.Image:
        """Resize and crop only (for overlays): the exact pixels the model sees, before normalising."""
        image = image.convert("RGB" if self.channels == 3 else "L")
        if self.resolution is None:
            return image
        rw, rh = self.resize_size(*image.size)
        image = image.resize((rw, rh), _INTERPOLATIONS[self.interpolation])
        return image.crop(self._crop_in_resized(rw, rh))

    def _crop_in_resized(self, rw: int, rh: int) -> tuple[int, int, int, int]:
        side = self.resolution
        left = int(round((rw - side) / 2.0))
        top = int(round((rh - side) / 2.0))
        return left, top, left + side, top + side

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = self.geometric(image)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (tensor - mean) / std

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalTransform":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def _numbers(values) -> str:
    return ",".join(f"{float(v):g}" for v in values)


def transform_from_timm_config(config: dict, **overrides) -> EvalTransform:
    """Build the eval transform from a timm pretrained/data config (input_size, crop_pct, mean, std...)."""
    size = config.get("input_size", (3, 224, 224))
    params = dict(resolution=int(size[-1]), crop_ratio=float(config.get("crop_pct", 0.875) or 0.875),
                  interpolation=str(config.get("interpolation", "bilinear") or "bilinear"),
                  mean=tuple(config.get("mean", IMAGENET_MEAN)), std=tuple(config.get("std", IMAGENET_STD)),
                  channels=int(size[0]))
    params.update({k: v for k, v in overrides.items() if v is not None})
    return EvalTransform(**params)


def _check_interpolation(name) -> None:
    if name not in _INTERPOLATIONS:
        raise DataError(f"unknown interpolation {name!r}; expected one of {', '.join(sorted(_INTERPOLATIONS))}")


def _check_normalisation(mean, std) -> None:
    """DataError unless every mean value is finite and every std value finite and > 0 (either may be empty)."""
    if not all(math.isfinite(float(m)) for m in mean):
        raise DataError(f"normalisation mean must be finite numbers; got {_numbers(mean)}")
    if not all(math.isfinite(float(v)) and float(v) > 0 for v in std):
        raise DataError(f"normalisation std must be finite and greater than 0 (it divides every pixel); "
                        f"got {_numbers(std)}")


TRANSFORM_OVERRIDES = ("resolution", "crop_ratio", "interpolation", "mean", "std")


def check_transform_overrides(resolution: int | None = None, crop_ratio: float | None = None,
                              interpolation: str | None = None, mean=None, std=None) -> dict:
    """Validate overrides of an eval transform's fields (None: keep the transform's own) and return the given
    ones as a dict ready for :func:`override_transform`. Checks what needs no transform: resolution an
    integer >= 1, crop_ratio in (0, 1], a known interpolation, mean and std sequences of finite numbers (std
    > 0) and, when both are given, of the same length. DataError (one line) otherwise.

    >>> check_transform_overrides(resolution=24, mean=(0.5,), std=(0.25,))
    {'resolution': 24, 'mean': (0.5,), 'std': (0.25,)}
    """
    out: dict = {}
    if resolution is not None:
        try:
            whole = not isinstance(resolution, bool) and float(resolution).is_integer() and int(resolution) >= 1
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise DataError(f"resolution must be an integer >= 1 (the side of the crop fed to the model); "
                            f"got {resolution!r}")
        out["resolution"] = int(resolution)
    if crop_ratio is not None:
        try:
            inside = not isinstance(crop_ratio, bool) and 0 < float(crop_ratio) <= 1
        except (TypeError, ValueError):
            inside = False
        if not inside:
            raise DataError(f"crop ratio must be in (0, 1] (resolution / resized short side); got {crop_ratio!r}")
        out["crop_ratio"] = float(crop_ratio)
    if interpolation is not None:
        _check_interpolation(interpolation)
        out["interpolation"] = str(interpolation)
    for key, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        values = (values,) if isinstance(values, (int, float)) else values
        try:
            out[key] = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise DataError(f"normalisation {key} must be numbers, one per input channel; got {values!r}") from None
        if not out[key]:
            raise DataError(f"normalisation {key} is empty; expected one number per input channel")
    _check_normalisation(out.get("mean", ()), out.get("std", ()))
    if "mean" in out and "std" in out and len(out["mean"]) != len(out["std"]):
        raise DataError(f"normalisation mean has {len(out['mean'])} values but std has {len(out['std'])}; expected "
                        "the same number in both, one per input channel")
    return out


def override_transform(transform: EvalTransform, **overrides) -> EvalTransform:
    """``transform`` with some fields replaced: what ``--resolution``, ``--crop-ratio``, ``--interpolation``,
    ``--mean`` and ``--std`` do, for a notebook as for the command line.

    overrides: resolution, crop_ratio, interpolation, mean, std (None values are ignored; see
    :func:`check_transform_overrides`). Giving both mean and std sets the number of input channels to their
    length (one value each: a grayscale network); giving one of them alone keeps the channel count, so it needs
    that many values. A crop ratio needs a resizing transform (a resolution, given or the transform's own).
    The result's geometry (``map_boxes``) is that of the pixels it produces, so Grad-CAM boxes follow it.

    >>> t = override_transform(EvalTransform(resolution=None, mean=(0.1,), std=(0.3,), channels=1),
    ...                        resolution=24, crop_ratio=0.75)     # 28x28 -> resize to 32x32 -> crop 24x24
    >>> t.output_size(28, 28)
    (24, 24)
    """
    import dataclasses

    unknown = sorted(set(overrides) - set(TRANSFORM_OVERRIDES))
    if unknown:
        raise DataError(f"unknown transform override {unknown[0]!r}; expected some of {', '.join(TRANSFORM_OVERRIDES)}")
    if not isinstance(transform, EvalTransform):
        raise DataError(f"transform overrides apply to an EvalTransform; got {type(transform).__name__}")
    changes = check_transform_overrides(**overrides)
    if not changes:
        return transform
    if "mean" in changes and "std" in changes:
        changes["channels"] = len(changes["mean"])    # e.g. one value each: a grayscale network
    else:
        for given, other in (("mean", "std"), ("std", "mean")):
            if given in changes and len(changes[given]) != transform.channels:
                raise DataError(f"normalisation {given} has {len(changes[given])} value(s) but the transform's "
                                f"{other} has {transform.channels} ({transform.channels}-channel input); expected "
                                f"{transform.channels}, or a {other} with as many values as the {given}")
    if "crop_ratio" in changes and changes.get("resolution", transform.resolution) is None:
        raise DataError(f"crop ratio {changes['crop_ratio']:g} has no effect: the transform feeds images at their "
                        "own size (no resolution); give a resolution too")
    return dataclasses.replace(transform, **changes)
