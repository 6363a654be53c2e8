"""Reading checkpoints safely and normalising them to a flat state_dict.

Formats (REFERENCE.md "Checkpoint formats met in practice"): flat state_dict; ``module.`` (DDP/FFCV) and
``_orig_mod.`` (torch.compile) prefixes; DeiT ``{'model': ..., 'optimizer': ..., ...}``; Lightning
``{'state_dict': ...}`` with an attribute prefix (``model.``); ``.safetensors``; our own
``{'state_dict': ..., 'repanalysis': {...}}``. Pickled code (a whole nn.Module) and TorchScript load only
with ``trust=True``: unpickling runs arbitrary code.

EMA weights: training checkpoints often hold a second, exponential-moving-average copy of the weights (timm's
train.py: ``state_dict`` + ``state_dict_ema``; torchvision's reference scripts: ``model`` + ``model_ema``, an
AveragedModel's state_dict with ``module.`` keys and an ``n_averaged`` counter; DeiT: ``model`` + ``model_ema``).
The live weights are read by default; ``ema=True`` reads the EMA copy.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from repanalysis.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "module")
_EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class RawCheckpoint:
    """What a checkpoint file held, after unwrapping: a flat state_dict or (trusted) a module."""

    path: Path
    state_dict: dict[str, torch.Tensor] | None
    module: torch.nn.Module | None = None
    info: dict = field(default_factory=dict)  # our 'repanalysis' block (arch, transform, ...), if any
    notes: list[str] = field(default_factory=list)
    kind: str = "state_dict"
    ema: bool = False           # the weights are the checkpoint's EMA copy (read with ema=True)
    # a Lightning state_dict with keys under several attributes (model.* beside a loss's criterion.weight):
    # (attribute, its state_dict) for each, the largest first, to try when the whole does not fit
    alternatives: list[tuple[str, dict]] = field(default_factory=list)


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". ")[0][:160]


def read_checkpoint(path: str | os.PathLike, trust: bool = False, ema: bool = False) -> RawCheckpoint:
    """Read ``path`` with safe loading (tensors and plain containers only) and unwrap it.

    ema: take the checkpoint's EMA weights (``state_dict_ema`` / ``model_ema``) instead of the live ones.
    Raises CheckpointError (one line) for a missing, truncated, corrupt or untrusted-code file, or for
    ``ema=True`` on a checkpoint without EMA weights.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; expected a .pth/.pt/.safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"cannot read {path} as safetensors: {_first_line(exc)}") from None
        return _unwrap(path, obj, ema)
    if _is_zip(path):
        _check_zip_records(path)
    is_torchscript = _is_torchscript(path)
    if is_torchscript:
        if not trust:
            raise CheckpointError(f"{path} is a TorchScript archive, which runs code when loaded; refusing. "
                                  "Pass --trust-checkpoint (trust=True) if you trust its source")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise CheckpointError(f"cannot load TorchScript {path}: {_first_line(exc)}") from None
        if ema:
            _no_ema(path, "a TorchScript archive (one set of weights)")
        return RawCheckpoint(path, None, module=module.eval(), kind="torchscript",
                             notes=["loaded TorchScript archive (trusted)"])
    if not _is_zip(path) and not _starts_like_pickle(path):
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or not a PyTorch "
                              "checkpoint (neither a torch.save zip archive, a legacy torch.save pickle nor "
                              ".safetensors)")
    try:
        # DeiT's training script saves its argparse.Namespace under 'args': plain data (attribute values),
        # rebuilt without running code, so safe loading takes it
        with _safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Weights only load failed" in str(exc) or type(exc).__name__ == "UnpicklingError" and _is_zip(path):
            if not trust:
                raise CheckpointError(
                    f"{path} contains pickled Python objects (e.g. a whole nn.Module), and unpickling can run "
                    "arbitrary code; refusing. Save a state_dict instead, or pass --trust-checkpoint "
                    "(trust=True) if you trust its source") from None
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise CheckpointError(f"cannot unpickle {path}: {_first_line(exc2)}") from None
        else:
            raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or not a PyTorch "
                                  f"checkpoint ({_first_line(exc)})") from None
    return _unwrap(path, obj, ema)


@contextmanager
def _safe_globals(types: list):
    """``torch.serialization.safe_globals`` (torch >= 2.5); on torch 2.4, ``add_safe_globals`` for the process."""
    scoped = getattr(torch.serialization, "safe_globals", None)
    if scoped is not None:
        with scoped(types):
            yield
        return
    torch.serialization.add_safe_globals(types)
    yield


def _starts_like_pickle(path: Path) -> bool:
    """Legacy (non-zip) torch.save files are pickles of protocol >= 2, which start with the PROTO opcode."""
    with open(path, "rb") as fh:
        return fh.read(1) == b"\x80"


def _is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def _check_zip_records(path: Path) -> None:
    """A torch.save (or TorchScript) zip archive whose records fail their CRC-32 is corrupt: torch.load would
    read the damaged tensor bytes without a word. Raises CheckpointError naming the first bad record."""
    bad = None
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.CRC == 0:        # torch.serialization.set_crc32_options(False) writes none: unchecked
                    continue
                try:
                    with zf.open(info) as record:      # reading a record to its end checks its CRC-32
                        while record.read(1 << 24):
                            pass
                except zipfile.BadZipFile:
                    bad = info.filename
                    break
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: the zip archive is damaged ({_first_line(exc)})") \
            from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad} fails its CRC check (the file was "
                              "damaged after it was written); expected an intact torch.save archive")


def _is_torchscript(path: Path) -> bool:
    if not _is_zip(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") or "/code/" in n
                       for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _ema_entry(obj) -> str | None:
    """The key of the checkpoint's EMA weights (a non-empty dict under one of ``_EMA_KEYS``), or None."""
    if not isinstance(obj, dict) or _is_state_dict(obj):
        return None
    return next((k for k in _EMA_KEYS if isinstance(obj.get(k), dict)
                 and any(isinstance(v, (torch.Tensor, dict)) for v in obj[k].values())), None)


def _no_ema(path: Path, holds: str) -> None:
    raise CheckpointError(f"checkpoint {path.name} has no EMA weights (none of {', '.join(map(repr, _EMA_KEYS))}): "
                          f"it holds {holds}; load it without --ema (ema=False)")


def _present_keys(obj, limit: int = 8) -> str:
    """What a checkpoint holds at its top level, for messages: its keys, or a flat state_dict's size."""
    if not isinstance(obj, dict):
        return type(obj).__name__
    if _is_state_dict(obj):
        return f"a flat state_dict of {len(obj)} tensors ({', '.join(list(obj)[:3])}, ...)"
    keys = sorted(map(str, obj))
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"keys {', '.join(keys[:limit])}{more}"


def _unwrap(path: Path, obj, ema: bool = False) -> RawCheckpoint:
    notes: list[str] = []
    info: dict = {}
    if isinstance(obj, torch.nn.Module):
        if ema:
            _no_ema(path, "a pickled nn.Module (one set of weights)")
        return RawCheckpoint(path, None, module=obj.eval(), kind="module",
                             notes=["loaded a pickled nn.Module (trusted)"])
    if isinstance(obj, dict) and isinstance(obj.get("repanalysis"), dict):
        info = dict(obj["repanalysis"])
    sd = obj
    if ema:
        key = _ema_entry(obj)
        if key is None:
            _no_ema(path, _present_keys(obj))
        notes.append(f"EMA weights taken from the checkpoint's '{key}' entry")
        sd = obj[key]
        # torchvision's ExponentialMovingAverage (an AveragedModel) saves its update counter beside the weights
        if isinstance(sd.get("n_averaged"), torch.Tensor) and sd["n_averaged"].numel() == 1:
            sd = {k: v for k, v in sd.items() if k != "n_averaged"}
    depth = 0
    while isinstance(sd, dict) and not _is_state_dict(sd) and depth < 3:
        key = next((k for k in _WRAPPER_KEYS if isinstance(sd.get(k), dict) and sd.get(k)), None)
        if key is None:
            break
        notes.append(f"weights taken from the checkpoint's '{key}' entry")
        sd = sd[key]
        depth += 1
    if isinstance(sd, dict):  # drop non-tensor extras mixed into a state_dict (e.g. Lightning metadata)
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) < len(sd) and all(isinstance(k, str) for k in sd):
            sd = tensors
    if not _is_state_dict(sd):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        ema_key = None if ema else _ema_entry(obj)
        only_ema = "" if ema_key is None else f"; it holds EMA weights under {ema_key!r}: load them with --ema (ema=True)"
        raise CheckpointError(f"{path} holds no state_dict (found {found}); expected a state_dict or a dict "
                              f"with one under {', '.join(repr(k) for k in _WRAPPER_KEYS[:3])}{only_ema}")
    alternatives = _lightning_attributes(sd) if isinstance(obj, dict) and any(k in obj for k in _LIGHTNING_KEYS) \
        else []
    sd, stripped = strip_prefixes(sd)
    if stripped:
        notes.append("stripped key prefix " + ", ".join(repr(p) for p in stripped))
    return RawCheckpoint(path, sd, info=info, notes=notes, alternatives=alternatives, ema=ema)


_LIGHTNING_KEYS = ("pytorch-lightning_version", "hyper_parameters", "optimizer_states", "lr_schedulers")


def _lightning_attributes(sd: dict[str, torch.Tensor]) -> list[tuple[str, dict]]:
    """The sub-state_dicts of a LightningModule's attributes (``model.*``, ``criterion.*``), the one with the
    most parameters first, each with its prefixes stripped; [] unless the keys sit under 2 or more attributes.
    Which one is the network is decided by which fits the architecture (a LightningModule may also hold its
    layers directly, as conv1.*, layer1.*, ...: then the whole state_dict fits and these are never tried)."""
    if not all(isinstance(k, str) and "." in k for k in sd):
        return []
    parts: dict[str, dict] = {}
    for key, value in sd.items():
        head, rest = key.split(".", 1)
        parts.setdefault(head, {})[rest] = value
    if len(parts) < 2:
        return []
    size = {head: sum(v.numel() for v in part.values()) for head, part in parts.items()}
    return [(f"{head}.", strip_prefixes(parts[head])[0]) for head in sorted(parts, key=size.get, reverse=True)]


def strip_prefixes(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove ``module.`` / ``_orig_mod.`` anywhere at the front of keys, then a prefix shared by every key
    (a Lightning attribute such as ``model.``). Returns (new state_dict, prefixes removed)."""
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if any(k.startswith(prefix) for k in sd):
                sd = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
                stripped.append(prefix)
                changed = True
        heads = {k.split(".", 1)[0] for k in sd}
        if len(heads) == 1 and all("." in k for k in sd):
            head = next(iter(heads)) + "."
            sd = {k[len(head):]: v for k, v in sd.items()}
            stripped.append(head)
            changed = True
    return sd, stripped
