"""Import fix for a CPU-only torch paired with a CUDA-built torchvision wheel.

On such a machine torchvision's compiled ops fail to load and ``import torchvision`` raises
"operator torchvision::nms does not exist" because its Python side registers fake kernels for
``nms``/``qnms`` whose schemas were never defined. Declaring the two schemas first lets the import
succeed (torchvision.ops and torchvision.io decoding remain unusable there; we decode with PIL).
Where torchvision's ops load normally this module does nothing.
"""
from __future__ import annotations

import torch

_LIBRARY = None  # keep a reference: the definitions live as long as the Library object


def _schema_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(name, "")
        return True
    except RuntimeError:
        return False


def _try_load_torchvision_ops() -> None:
    """Load torchvision's compiled ops library the way torchvision does, without importing torchvision."""
    import glob
    import importlib.util
    import os

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd")):
            try:
                torch.ops.load_library(path)
            except (OSError, RuntimeError):
                pass


def apply() -> bool:
    """Declare torchvision's nms schemas if they are missing. Returns True when it had to."""
    global _LIBRARY
    if _LIBRARY is not None or _schema_exists("torchvision::nms"):
        return False
    _try_load_torchvision_ops()
    if _schema_exists("torchvision::nms"):
        return False
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = lib
    return True
