"""AURC / E-AURC: repanalysis against the numpy ways users write, in the same run.

    .venv/bin/python benchmarks/selective.py [--repeats 5] [--threads N] [--quick]

Input: float32 logits 50,000 x 1,000 (seeded; labels drawn from the softmax of the logits, which are then
sharpened by 1.5). Each side goes from the logits to the AURC of the max-softmax confidence:

- ours: ``selective_prediction(logits, labels, scores=("max_softmax",))`` (torch, one sort, a cumulative sum;
  ties averaged, the E-AURC and the curve come with it);
- numpy: softmax max in float64, ``np.argsort(-conf)``, ``np.cumsum(errors) / k``, mean;
- loop: the same confidences, then the risk-coverage loop of Geifman et al.'s code (``RC_curve``: drop the
  least confident sample one at a time, a Python loop over N).
Neither numpy way handles ties; the script checks that the seeded confidences have none, so all three agree
to float rounding. Times: the minimum (and median) of ``--repeats`` round-robin runs after a warm-up; the ratio
is (their minimum) / (our minimum). Peak memory: the rise of the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs before each side) over its RSS before, measured first with glibc's mmap threshold at
128 KiB so that freed arrays leave the RSS. ``--quick``: 5,000 x 100, one repeat.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

import numpy as np

import repanalysis  # noqa: F401
import torch
from repanalysis.analyze.selective import selective_prediction
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def make_logits(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, k, generator=g) * 2.5
    y = torch.multinomial(torch.softmax(base, 1), 1, generator=g).squeeze(1)
    return (base * 1.5).float().contiguous(), y


def numpy_conf(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return 1.0 / e.sum(1), z.argmax(1)


def numpy_aurc(z, y):
    conf, pred = numpy_conf(z)
    err = (pred != y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    return float(np.mean(np.cumsum(err[order]) / np.arange(1, err.size + 1)))


def loop_aurc(z, y):
    """Geifman et al.'s RC_curve: start from full coverage, drop the least confident one sample at a time."""
    conf, pred = numpy_conf(z)
    residuals = (pred != y).astype(np.float64)
    m = len(residuals)
    idx_sorted = np.argsort(conf)
    cov, acc = m, residuals.sum()
    curve = [acc / m]
    for i in range(0, m - 1):
        cov -= 1
        acc -= residuals[idx_sorted[i]]
        curve.append(acc / (m - i - 1))
    return sum(curve) / len(curve)


def ours(z, y):
    return selective_prediction(z, y, scores=("max_softmax",)).aurc["max_softmax"]


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def peak_rise(fn):
    """Bytes the peak RSS rises above the RSS before ``fn`` (NaN when the peak cannot be reset here)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    before = _status("VmRSS")
    fn()
    return _status("VmHWM") - before


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="5,000 x 100 logits, one repeat (a smoke run)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, k = (5_000, 100) if args.quick else (50_000, 1_000)
    repeats = args.repeats or (1 if args.quick else 5)
    z, y = make_logits(n, k)
    zn, yn = z.numpy(), y.numpy()
    conf, _ = numpy_conf(zn)
    if np.unique(conf).size != n:
        print("the seeded confidences have ties; the numpy ways would not agree", file=sys.stderr)
        return 1
    sides = [("repanalysis (torch)", lambda: ours(z, y)), ("numpy argsort + cumsum", lambda: numpy_aurc(zn, yn)),
             ("python loop (RC_curve)", lambda: loop_aurc(zn, yn))]
    try:    # peaks first, with blocks >= 128 KiB straight from mmap and back on free: each side's own arrays show
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 17)                              # M_MMAP_THRESHOLD
    except OSError:
        libc = None
    peaks = [peak_rise(fn) for _, fn in sides]
    if libc is not None:
        libc.mallopt(-3, 32 << 20)                             # then glibc's largest dynamic threshold for timing
    values = [fn() for _, fn in sides]
    times = [[] for _ in sides]
    for _ in range(repeats):
        for i, (_, fn) in enumerate(sides):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    print(f"AURC of max softmax, {n:,} x {k:,} float32 logits, {torch.get_num_threads()} torch thread(s), "
          f"{repeats} repeat(s)")
    best = min(times[0])
    for (label, _), t, v, p in zip(sides, times, values, peaks):
        print(f"  {label:24s} min {1000 * min(t):9.1f} ms  median {1000 * statistics.median(t):9.1f} ms  "
              f"x{min(t) / best:6.1f}  peak +{p / 2 ** 20:7.1f} MiB  AURC {v:.12f}")
    ok = agree("AURC repanalysis vs numpy argsort+cumsum", abs(values[0] - values[1]), 1e-12)
    ok &= agree("AURC repanalysis vs python RC_curve loop", abs(values[0] - values[2]), 1e-12)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
