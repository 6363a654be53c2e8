"""Array and option checks every floor uses: device choice, number checks, logits/labels coercion, display names.

Every analysis accepts numpy arrays (memory maps included) or torch tensors and runs the same
vectorised torch code on CPU or GPU (``device=None`` keeps CPU; pass "cuda" or use :func:`pick_device`).
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from repanalysis.errors import DataError


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu", "cuda" or "cuda:N" (checked: DataError when unknown
    or not present)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DataError(f"unknown device {str(device)!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(f"device {str(device)!r} was asked for but no CUDA device is available; "
                            "use auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DataError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise DataError(f"device {str(device)!r} is not supported; expected auto, cpu, cuda or cuda:N")
    return dev


def as_tensor(x, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> torch.Tensor:
    """numpy / memmap / list / tensor -> tensor on ``device`` (CPU by default; "auto" = CUDA when present),
    optionally cast."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        a = np.asarray(x)
        if a.dtype.kind not in "biuf":
            what = "text" if a.dtype.kind in "US" else f"{a.dtype} values"
            raise DataError(f"expected an array of numbers; got {what} (array of shape {a.shape})")
        with warnings.catch_warnings():  # read-only memory maps are only ever read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(np.ascontiguousarray(a))
    if device is not None:
        t = t.to(pick_device(device))
    if dtype is not None:
        t = t.to(dtype)
    return t


def as_labels(labels, num_samples: int | None = None, *, num_classes: int | None = None, device=None,
              what: str = "labels") -> torch.Tensor:
    """Class labels -> int64 tensor [N] on ``device``; DataError unless they are a 1-D array of integers
    (floats with integral values are accepted), one per sample when ``num_samples`` is given, >= 0, and
    below ``num_classes`` when that is given."""
    t = as_tensor(labels, device=device)
    if t.ndim != 1:
        raise DataError(f"{what} must be 1-D with one class index per sample; got shape {tuple(t.shape)}")
    if num_samples is not None and t.shape[0] != num_samples:
        raise DataError(f"{what} must have one entry per sample ({num_samples}); got {t.shape[0]}")
    if t.dtype == torch.bool:
        t = t.long()
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not torch.equal(t, t.round()):
            raise DataError(f"{what} must be integer class indices; got non-integer values")
    t = t.long()
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if num_classes is not None and (lo < 0 or hi >= num_classes):
            raise DataError(f"{what} must lie in [0, {num_classes - 1}] for {num_classes} classes; "
                            f"found values in [{lo}, {hi}]")
        if lo < 0:
            raise DataError(f"{what} must be class indices >= 0; found {lo}")
    return t


def check_logits_labels(logits, labels, num_classes: int | None = None, *, device=None,
                        dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and label range; return (logits [N, K] float, labels [N] int64).

    Raises DataError naming the problem: logits not 2-D, length mismatch, labels outside [0, K).
    """
    logits_t = as_tensor(logits, device=device)
    labels_t = as_tensor(labels, device=device)
    if logits_t.ndim != 2:
        raise DataError(f"logits must be 2-D [N, K]; got shape {tuple(logits_t.shape)}")
    if labels_t.ndim != 1 or labels_t.shape[0] != logits_t.shape[0]:
        raise DataError(f"labels must be 1-D with one entry per logits row ({logits_t.shape[0]}); "
                        f"got shape {tuple(labels_t.shape)}")
    k = logits_t.shape[1] if num_classes is None else check_number(num_classes, "num_classes", integer=True,
                                                                   minimum=1)
    if k != logits_t.shape[1]:
        raise DataError(f"logits have {logits_t.shape[1]} columns but the model has {k} classes")
    return logits_t.to(dtype), as_labels(labels_t, num_classes=k)


def refuse_probabilities(z: torch.Tensor, what: str = "the logits") -> None:
    """DataError when every row of z (N, K) lies in [0, 1] and sums to 1: softmax was already applied.

    The first rows almost always tell; only when they look like probabilities are all rows checked."""
    if not _looks_like_probabilities(z[:16]):
        return
    if all(_looks_like_probabilities(z[s:s + 65536]) for s in range(0, z.shape[0], 65536)):
        raise DataError(f"{what} look like probabilities (every row lies in [0, 1] and sums to 1); "
                        "pass the pre-softmax logits (or log-probabilities) instead")


def _looks_like_probabilities(block: torch.Tensor) -> bool:
    finite = block[torch.isfinite(block).all(1)]
    if finite.numel() == 0:
        return False
    lo, hi = finite.aminmax()
    return bool(lo >= 0) and bool(hi <= 1) and bool(((finite.sum(1) - 1).abs() <= 1e-3).all())


def drop_nonfinite(logits: torch.Tensor, *others: torch.Tensor, what: str = "logits"):
    """Remove rows whose logits hold NaN or inf, warning with the count.

    Returns ``(logits, *others, n_dropped)``. Raises DataError when no row is left.
    """
    finite = torch.isfinite(logits).all(dim=1)
    n_bad = int((~finite).sum())
    if n_bad == 0:
        return (logits, *others, 0)
    n = logits.shape[0]
    if n_bad == n:
        raise DataError(f"all {n} rows of {what} contain NaN or inf; nothing to analyse")
    warnings.warn(f"{n_bad} of {n} samples have NaN or inf {what}; they are excluded", RuntimeWarning,
                  stacklevel=2)
    return (logits[finite], *(o[finite] for o in others), n_bad)


def check_number(value, what: str, *, integer: bool = False, minimum=None, maximum=None,
                 above: bool = False, below: bool = False):
    """A scalar option -> float (or int with ``integer``); DataError naming ``what`` unless it is a finite
    real number (numpy scalars and 0-d tensors included, bools not; with ``integer`` a float must be whole)
    within [minimum, maximum] (open at that end with ``above`` / ``below``)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()                                  # a 0-d tensor or array holds one number
    if integer and isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)                                    # 20.0 bins, 5.0 resamples
    ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, (bool, np.bool_))
    v = (int(value) if integer else float(value)) if ok else None
    if ok and not integer:
        ok = math.isfinite(v)
    if ok and minimum is not None:
        ok = v > minimum if above else v >= minimum
    if ok and maximum is not None:
        ok = v < maximum if below else v <= maximum
    if not ok:
        kind = "an integer" if integer else "a finite number"
        lo = "" if minimum is None else f"{'>' if above else '>='} {minimum}"
        hi = "" if maximum is None else f"{'<' if below else '<='} {maximum}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise DataError(f"{what} must be {kind}{' ' + bounds if bounds else ''}; got {value!r}")
    return v


def model_names(dumps, names=None) -> list[str]:
    """One display name per Dump: ``names`` (a list, or 'a,b,c') or the Dumps' own names (see
    :func:`distinct_names`); DataError when there is no Dump."""
    dumps = list(dumps)
    if not dumps:
        raise DataError("no models given; expected at least one Dump")
    return distinct_names([d.name for d in dumps], names)


def distinct_names(defaults, names=None, what: str = "models") -> list[str]:
    """``names`` (a list, or 'a,b,c'), one non-empty name per model, or else ``defaults``; DataError unless
    they are distinct (each names a model in tables, legends and JSON)."""
    if names is None:
        names = list(defaults)
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise DataError(f"model names must be distinct: two {what} are both named {dup!r} (the same one given "
                            f"twice?); expected distinct {what}, or distinct names (--names)")
        return names
    if isinstance(names, str):
        names = names.split(",")
    elif isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        names = list(names)
    else:
        raise DataError(f"names must be a list of strings or one string 'a,b,c'; got {names!r:.60} "
                        f"({type(names).__name__})")
    names = [n.strip() for n in names]
    if not all(names):
        raise DataError(f"names {names!r} have an empty entry; expected one non-empty name per model")
    if len(names) != len(defaults):
        raise DataError(f"{len(names)} names for {len(defaults)} {what}; expected one name per model")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise DataError(f"model names must be distinct: the names give {dup!r} twice; expected one distinct "
                        "name per model")
    return names
