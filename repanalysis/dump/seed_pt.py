"""The seed tool's single-file ``.pt`` (``{'logits': FloatTensor[N, K], 'labels': LongTensor[N]}``): read as a
Dump, and written from one."""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from repanalysis.dump.dump import Dump, _check_shapes, integral_labels, load_dump
from repanalysis.errors import DumpError
from repanalysis.outputs import temp_file, umask_mode


def check_pt_output(output: Path) -> None:
    """DumpError when a ``.pt`` output path is an existing folder (checked before any work is done)."""
    if output.is_dir():
        raise DumpError(f"output {output} is a directory; expected the path of a .pt file (choose another "
                        "--output, or drop the .pt suffix to write a Dump folder)")


def save_seed_pt(dump: Dump, path: str | os.PathLike, overwrite: bool = False) -> Dump:
    """Write the seed tool's format ``{'logits': FloatTensor[N, K], 'labels': LongTensor[N]}`` atomically."""
    import torch

    path = Path(path)
    check_pt_output(path)
    if path.exists() and not overwrite:
        raise DumpError(f"output {path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"logits": torch.from_numpy(np.array(dump.logits, dtype=np.float32)),  # copies: memmaps are read-only
               "labels": torch.from_numpy(np.array(dump.labels, dtype=np.int64))}
    fd, tmp = temp_file(path)
    os.close(fd)
    try:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:      # torch's zip writer reports a short write (full disk) as a RuntimeError
            need = sum(t.numel() * t.element_size() for t in payload.values())
            full = shutil.disk_usage(path.parent).free < need + (1 << 20)
            why = "disk full; free space and re-run" if full else f"the write failed ({str(exc).strip()[:160]})"
            raise DumpError(f"cannot write {path}: {why}") from None
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return load_dump(path)




def _load_seed_pt(path: Path, name: str | None) -> Dump:
    import torch

    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DumpError(f"cannot read {path} ({exc.strerror or exc}); expected a readable seed .pt file") from None
    if head == b"\x93NUMPY":
        raise DumpError(f"cannot read {path} as a Dump: it is a .npy array; expected a Dump directory (the "
                        "folder holding meta.json) or a seed .pt file")
    if not head.startswith((b"PK\x03\x04", b"\x80")):   # torch.save writes a zip (a pickle before torch 1.6)
        raise DumpError(f"cannot read {path} as a logits file: it is not a torch file (it starts with {head!r}); "
                        "expected a Dump directory or torch.save({'logits': [N, K], 'labels': [N]})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/unsafe files
        if "Weights only load failed" in str(exc):
            why = ("it holds pickled Python objects besides tensors, and unpickling can run code, so it is not "
                   "read")
        elif head.startswith(b"PK") and not zipfile.is_zipfile(path):
            why = "the file is truncated or damaged (not a complete zip archive)"
        else:
            why = (str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:200]
        raise DumpError(f"cannot read {path} as a logits file: {why}; expected torch.save("
                        "{'logits': FloatTensor[N, K], 'labels': LongTensor[N]})") from None
    if not isinstance(obj, dict) or "logits" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DumpError(f"{path} has no 'logits' entry (found {keys}); expected "
                        "{'logits': FloatTensor[N, K], 'labels': LongTensor[N]}")
    if "labels" not in obj:
        raise DumpError(f"{path} has no 'labels' entry; expected {{'logits': [N, K], 'labels': [N]}}")
    logits, labels = obj["logits"], obj["labels"]
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise DumpError(f"{path}: 'logits' must be a 2-D tensor [N, K], got "
                        f"{getattr(logits, 'shape', type(logits).__name__)}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(logits):
        raise DumpError(f"{path}: 'labels' must be a 1-D tensor of length {len(logits)} matching logits, "
                        f"got {tuple(getattr(labels, 'shape', ()))}")
    if labels.is_complex():
        raise DumpError(f"{path}: 'labels' has dtype {labels.dtype}; expected integer class indices")
    raw_labels = labels.double().numpy() if labels.is_floating_point() else labels.long().numpy()
    arrays = {"logits": logits, "labels": integral_labels(raw_labels, path)}
    for key in ("features", "classifier_weight", "classifier_bias"):
        if isinstance(obj.get(key), torch.Tensor):
            arrays[key] = obj[key]
    complex_key = next((k for k, v in arrays.items() if k != "labels" and v.is_complex()), None)
    if complex_key is not None:
        raise DumpError(f"{path}: {complex_key!r} has dtype {arrays[complex_key].dtype}; expected real numbers")
    arrays = {k: (v if k == "labels" else v.detach().float().numpy()) for k, v in arrays.items()}
    _check_shapes(arrays, str(path))
    meta = {"format": "seed-pt", "source": str(path), "complete": True, "num_classes": int(logits.shape[1])}
    return Dump(arrays, meta, path=path, name=name or path.stem)


# --- incremental writing -------------------------------------------------------------------------
