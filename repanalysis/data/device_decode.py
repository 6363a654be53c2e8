"""Decoding JPEGs on the extraction device (nvJPEG on a GPU) instead of with PIL in the loader workers.

On a fast GPU, JPEG decoding and resizing in the DataLoader's CPU workers bound the images/s (benchmarks/
distributed.py measures the share). With ``extract(..., decode="device")`` the workers only read each file's
bytes (:class:`EncodedImages`); the main process decodes a whole batch with ``torchvision.io.decode_jpeg(...,
device=)`` (batched nvJPEG on CUDA) and resizes, crops and normalises on the device (:func:`decode_batch`), the
same geometry as :class:`~repanalysis.data.transforms.EvalTransform` (the CPU path, which stays the reference):
short side to round(resolution / crop_ratio) with an antialiased filter, centre crop, (x / 255 - mean) / std.
The pixels differ from PIL's by decoder and filter rounding (a few 1/255 steps at most), so the logits differ
slightly: such a Dump records ``decode: device`` and is a different run from the PIL one.
Files that are not JPEG (PNG, ...) are decoded by torchvision on the CPU and moved to the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from repanalysis.errors import DataError

DECODERS = ("pil", "device")
_MODES = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}
_JPEG_MAGIC = b"\xff\xd8"


def torchvision_decoding_error() -> str | None:
    """Why torchvision cannot decode images here (its compiled image extension did not load), or None."""
    try:
        from torchvision.io import image as tv_image

        tv_image._assert_has_image_ops()
    except (ImportError, RuntimeError, AttributeError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def check_device_decoding(dataset, transform) -> None:
    """DataError (one line) unless ``decode="device"`` can run on ``dataset`` with ``transform``: image files (not
    an array data set), an EvalTransform with an interpolation torch has, and torchvision's decoders loaded."""
    if getattr(dataset, "is_array", True) or not hasattr(dataset, "path"):
        raise DataError(f"decode='device' reads image files, but {getattr(dataset, 'root', 'this data set')} holds its "
                        "images in an array; expected an image folder (or decode='pil')")
    if not hasattr(transform, "resize_size"):
        raise DataError("decode='device' applies the model's EvalTransform on the device; expected an EvalTransform "
                        "(repanalysis.data.EvalTransform), not a custom callable (or decode='pil')")
    if transform.interpolation not in _MODES:
        raise DataError(f"decode='device' resizes with torch, which has no {transform.interpolation!r} filter; "
                        f"expected one of {', '.join(_MODES)} (or decode='pil')")
    why = torchvision_decoding_error()
    if why is not None:
        raise DataError(f"torchvision cannot decode images here ({why}); expected a torchvision whose image "
                        "extension loads (a CUDA machine's build), or decode='pil'")


class EncodedImages(torch.utils.data.Dataset):
    """Items ``(file bytes as a uint8 tensor, label, index)`` of an image-file data set's ``indices``."""

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        data = Path(self.dataset.path(index)).read_bytes()
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), int(self.dataset.labels[index]), index


def collate_encoded(items):
    """A batch of EncodedImages items -> (list of byte tensors, labels int64 [B], ids int64 [B])."""
    data, labels, ids = zip(*items)
    return list(data), torch.tensor(labels, dtype=torch.int64), torch.tensor(ids, dtype=torch.int64)


def _torchvision_decoder(encoded: list[torch.Tensor], channels: int, device: torch.device) -> list[torch.Tensor]:
    """uint8 [C, H, W] images on ``device``: JPEGs in one batched decode_jpeg there, other files on the CPU."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    jpeg = [i for i, b in enumerate(encoded) if bytes(b[:2].tolist()) == _JPEG_MAGIC]
    out: list[torch.Tensor | None] = [None] * len(encoded)
    if jpeg:
        for i, image in zip(jpeg, decode_jpeg([encoded[i] for i in jpeg], mode=mode, device=device)):
            out[i] = image
    for i in (i for i in range(len(encoded)) if out[i] is None):
        out[i] = decode_image(encoded[i], mode=mode).to(device, non_blocking=True)
    return out


def decode_batch(encoded: list[torch.Tensor], transform, device: torch.device,
                 decoder: Callable | None = None) -> torch.Tensor:
    """Decode, resize, centre-crop and normalise a batch on ``device``: float32 [B, C, H, W].

    ``decoder(encoded, channels, device)`` gives uint8 [C, H, W] images (torchvision's by default). Images differ
    in size, so each is resized on its own (a loop over the batch's images; every step runs on the device)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    images = (decoder or _torchvision_decoder)(encoded, transform.channels, device)
    mode = getattr(InterpolationMode, _MODES[transform.interpolation])
    mean = torch.tensor(transform.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(transform.std, dtype=torch.float32, device=device).view(-1, 1, 1)
    out = []
    for image in images:
        h, w = image.shape[-2:]
        if transform.resolution is not None:
            rw, rh = transform.resize_size(w, h)
            # uint8 in, uint8 out (rounded), as PIL's resize of an 8-bit image
            image = F.resize(image, [rh, rw], interpolation=mode, antialias=True)
            left, top, right, bottom = transform.crop_box(w, h)
            image = image[:, top:bottom, left:right]
        out.append(image)
    batch = torch.stack(out).to(torch.float32).div_(255.0)
    return batch.sub_(mean).div_(std)
