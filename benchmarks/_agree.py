"""The agreement line every benchmark prints (tests/test_benchmarks.py looks for it)."""
from __future__ import annotations


def agree(what: str, diff: float, tol: float) -> bool:
    """Print the one agreement line (``agree: ... max|diff| = d <= tol``, or DISAGREE); True when they agree."""
    ok = bool(diff <= tol)            # a NaN difference disagrees
    print(f"agree: {what} max|diff| = {diff:.1e} <= {tol:.0e}" if ok else
          f"DISAGREE: {what} max|diff| = {diff:.1e} > {tol:.0e}", flush=True)
    return ok
