"""Checks that Dumps analysed as a pair (in-distribution / OOD, test / validation, probe train / test) come from
the same checkpoint, read from the sha256 each Dump records at extraction."""
from __future__ import annotations

from repanalysis.errors import DataError


def checkpoint_of(dump) -> tuple[str | None, str | None]:
    """(path, sha256) of the checkpoint a Dump was extracted from; (None, None) when it does not say (arrays
    wrapped with ``Dump.from_arrays``, the seed tool's ``.pt``)."""
    ck = dump.meta.get("checkpoint") if isinstance(dump.meta, dict) else None
    if not isinstance(ck, dict):
        return None, None
    return ck.get("path"), ck.get("sha256")


def check_same_model(a, b, what: str) -> None:
    """DataError when both Dumps name their checkpoint's sha256 and the two differ. ``what`` names the pair
    in the message (e.g. "--fit-temperature")."""
    (pa, sa), (pb, sb) = checkpoint_of(a), checkpoint_of(b)
    if sa and sb and sa != sb:
        raise DataError(f"{what}: {a.path or a.name} was extracted from {pa} (sha256 {sa[:12]}) but "
                        f"{b.path or b.name} from {pb} (sha256 {sb[:12]}); expected two Dumps of the same model")
