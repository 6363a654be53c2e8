"""Checks that Dumps analysed as a pair (in-distribution / OOD, test / validation, probe train / test) come from
the same checkpoint, read from the sha256 each Dump records at extraction."""
from __future__ import annotations

import warnings

from repanalysis.errors import DataError


def checkpoint_of(dump) -> tuple[str | None, str | None]:
    """(path, sha256) of the checkpoint a Dump was extracted from; (None, None) when it does not say (arrays
    wrapped with ``Dump.from_arrays``, the seed tool's ``.pt``)."""
    ck = dump.meta.get("checkpoint") if isinstance(dump.meta, dict) else None
    if not isinstance(ck, dict):
        return None, None
    return ck.get("path"), ck.get("sha256")


def _used_ema(dump) -> bool:
    """Whether a Dump was extracted with its checkpoint's EMA weights (``repanalysis extract --ema``)."""
    ck = dump.meta.get("checkpoint") if isinstance(dump.meta, dict) else None
    return bool(ck.get("ema")) if isinstance(ck, dict) else False


def check_same_model(a, b, what: str) -> None:
    """DataError when both Dumps name their checkpoint's sha256 and the two differ. ``what`` names the pair
    in the message (e.g. "--fit-temperature"). A Dump read from a file that records no checkpoint (the seed
    tool's .pt) gets a warning that the pair is unchecked; arrays wrapped in memory do not."""
    (pa, sa), (pb, sb) = checkpoint_of(a), checkpoint_of(b)
    unknown = [d for d, sha in ((a, sa), (b, sb)) if not sha and d.path is not None]
    if unknown:            # a file that records no checkpoint (the seed tool's .pt): say the pair is unchecked
        warnings.warn(f"{what}: {unknown[0].path} records no checkpoint, so it cannot be checked that "
                      f"{a.path or a.name} and {b.path or b.name} come from the same model", RuntimeWarning,
                      stacklevel=3)
    if sa and sb and sa != sb:
        raise DataError(f"{what}: {a.path or a.name} was extracted from {pa} (sha256 {sa[:12]}) but "
                        f"{b.path or b.name} from {pb} (sha256 {sb[:12]}); expected two Dumps of the same model")
    ea, eb = (_used_ema(d) for d in (a, b))
    if sa and sb and ea != eb:      # one checkpoint, but its live weights for one Dump and its EMA for the other
        ema_dump, live_dump = (a, b) if ea else (b, a)
        raise DataError(f"{what}: {ema_dump.path or ema_dump.name} was extracted with the checkpoint's EMA weights "
                        f"but {live_dump.path or live_dump.name} with its live weights; expected two Dumps of the "
                        "same weights (both with --ema or both without)")


def check_different_data(a, b, what: str) -> None:
    """DataError when two Dumps meant to hold different samples (in-distribution and OOD) are the same Dump, or
    two Dumps of the same extraction run (equal run fingerprints: checkpoint, data, split and transform)."""
    from pathlib import Path

    same_path = a.path is not None and b.path is not None and Path(a.path).resolve() == Path(b.path).resolve()
    fa, fb = (d.meta.get("fingerprint") if isinstance(d.meta, dict) else None for d in (a, b))
    if same_path or (fa and fa == fb):
        how = "is the same Dump as" if same_path else "holds the same samples (the same extraction run) as"
        raise DataError(f"{what}: {b.path or b.name} {how} {a.path or a.name}; expected a Dump of other data")


def check_same_samples(dumps, what: str = "compare") -> None:
    """DataError unless every Dump holds the same task and samples in the same order: the same number of
    classes and class names (the label order), the same number of samples, the same labels and (where both
    record them) the same sample names. A comparison of models on different images or label orders would be
    meaningless; the message names the first two Dumps that differ and how."""
    import numpy as np

    dumps = list(dumps)
    if not dumps:
        raise DataError(f"{what}: no inputs; expected at least one Dump")
    first = dumps[0]

    def label(d):
        return f"{d.name} ({d.path})" if d.path is not None else str(d.name)

    for d in dumps[1:]:
        if d.num_classes != first.num_classes:
            raise DataError(f"{what}: {label(first)} has {first.num_classes} classes but {label(d)} has "
                            f"{d.num_classes}; expected models of the same classes")
        ca, cb = first.class_names, d.class_names
        if ca and cb and list(ca) != list(cb):
            i = next(j for j, (x, y) in enumerate(zip(ca, cb)) if x != y)
            raise DataError(f"{what}: the class order differs: class {i} is {ca[i]!r} in {label(first)} but {cb[i]!r} "
                            f"in {label(d)}; expected the same classes in the same order")
        if d.num_samples != first.num_samples:
            raise DataError(f"{what}: {label(first)} holds {first.num_samples} samples but {label(d)} holds "
                            f"{d.num_samples}; expected Dumps of the same images")
        la, lb = np.asarray(first.labels), np.asarray(d.labels)
        if not np.array_equal(la, lb):
            i = int(np.flatnonzero(la != lb)[0])
            raise DataError(f"{what}: sample {i} has label {la[i]} in {label(first)} but {lb[i]} in {label(d)}; "
                            "expected the same images in the same order, labelled alike")
        na, nb = first.sample_names(), d.sample_names()
        if na and nb and list(na) != list(nb):
            i = next(j for j, (x, y) in enumerate(zip(na, nb)) if x != y)
            raise DataError(f"{what}: sample {i} is {na[i]} in {label(first)} but {nb[i]} in {label(d)}; "
                            "expected the same images in the same order")
