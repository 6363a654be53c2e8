"""This process's memory as the benchmarks report it (each side runs in its own subprocess, so its peak is its own)."""
from __future__ import annotations

from pathlib import Path


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB: VmRSS and VmHWM from /proc/self/status. Where /proc does
    not give them, the current RSS is NaN and the peak is getrusage's ru_maxrss."""
    cur = peak = float("nan")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    if peak != peak:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM) in MiB."""
    return rss_mib()[1]
