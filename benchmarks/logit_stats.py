"""Logit statistics on a large float16 Dump: our streaming pass vs the straightforward in-memory numpy version.

Writes N x K float16 logits (default 1,000,000 x 1,000, about 2 GB) to a Dump with DumpWriter, then runs,
each in its own subprocess so that its peak RSS (VmHWM) is its own:

- ours:  ``repanalysis.analyze.logits.logit_stats_dump`` (chunks through the memory map, bounded memory);
- numpy: what the seed tool does: load the whole array into memory as float32 and compute every per-sample
  statistic on it at once.

Both compute the same statistics (near-zero fraction, top-1 probability, range, L2 norm, L_LS and its
regularization / error-enhancement split, MaxSup penalty, correctness, mean and quantiles); ours runs
without the KDE for a like-for-like comparison, then once more with the default KDE of the first 10,000
rows. Ours uses one torch thread by default, as numpy's element-wise operations do (``--threads 0``:
torch's default). Wall and CPU seconds are both reported (CPU time is steadier on a shared machine).
The means of both are compared: ``agree: ... max|diff| = ... <= tol`` (relative differences), or DISAGREE
and exit 1 (also when a side fails). The Dump is deleted afterwards (``--keep`` keeps it).

    .venv/bin/python benchmarks/logit_stats.py                 # 1,000,000 x 1,000 (about 2 GB on disk)
    .venv/bin/python benchmarks/logit_stats.py --rows 100000   # a quicker run
    .venv/bin/python benchmarks/logit_stats.py --quick         # 20,000 x 100, seconds (what the tests run)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from _memory import peak_rss_mib  # noqa: E402

THRESHOLD, ALPHA = 0.01, 0.1
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# both read the same float16 logits; the statistics are means over N rows of float32 (numpy) or float32 /
# float64 (ours) per-row values, so they agree to float32 rounding accumulated over the sum
REL_TOLERANCE = 1e-5
STATS = ("near_zero_fraction", "top1_prob", "logit_range", "logit_norm", "ls_loss", "ls_regularization",
         "ls_error_enhancement", "maxsup_penalty")




def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


# --- workers (run in subprocesses) -------------------------------------------------------------------
def worker_ours(path: str, kde: bool, threads: int) -> dict:
    import torch

    import repanalysis  # noqa: F401
    from repanalysis.analyze.logits import logit_stats_dump
    from repanalysis.extract.store import load_dump

    if threads > 0:
        torch.set_num_threads(threads)
    rss_import = peak_rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    r = logit_stats_dump(load_dump(path), threshold=THRESHOLD, alpha=ALPHA, kde_samples=10_000 if kde else 0)
    summary = {s: r.summary(s) for s in STATS}
    means = {s: summary[s]["mean"] for s in STATS}
    means["accuracy"] = r.accuracy
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib(), "rss_after_import_mib": rss_import,
            "means": means}


def worker_numpy(path: str) -> dict:
    rss_import = peak_rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    z = np.load(Path(path) / "logits.npy").astype(np.float32)  # the whole array in memory, as the seed does
    y = np.load(Path(path) / "labels.npy")
    n, k = z.shape
    out = {"near_zero_fraction": (np.abs(z) < THRESHOLD).mean(axis=1)}
    z_max, z_min, z_mean = z.max(axis=1), z.min(axis=1), z.mean(axis=1)
    out["top1_prob"] = 1.0 / np.exp(z - z_max[:, None]).sum(axis=1)
    out["logit_range"] = z_max - z_min
    out["logit_norm"] = np.linalg.norm(z, axis=1)
    z_y = z[np.arange(n), y]
    d = z_y[:, None] - z
    out["ls_loss"] = ALPHA * (z_y - z_mean)
    out["ls_regularization"] = ALPHA / k * np.where(d > 0, d, 0).sum(axis=1)
    out["ls_error_enhancement"] = ALPHA / k * np.where(d < 0, d, 0).sum(axis=1)
    out["maxsup_penalty"] = ALPHA * (z_max - z_mean)
    accuracy = float((z.argmax(axis=1) == y).mean())
    means = {}
    for s in STATS:
        v = out[s].astype(np.float64)
        np.quantile(v, QUANTILES)
        means[s] = float(v.mean())
    means["accuracy"] = accuracy
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib(), "rss_after_import_mib": rss_import,
            "means": means}


def _run_worker(mode: str, path: Path, threads: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--path", str(path), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- data ------------------------------------------------------------------------------------------
def write_dump(path: Path, rows: int, classes: int, seed: int = 0) -> float:
    """Random float16 logits with a boosted true class and some near-zero entries; returns seconds."""
    import torch

    import repanalysis  # noqa: F401
    from repanalysis.extract.store import DumpWriter

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    writer = DumpWriter(path, rows, {"logits": ((classes,), np.float16), "labels": ((), np.int64)},
                        {"name": "bench", "num_classes": classes}, overwrite=True)
    step = max(1, (1 << 24) // classes)
    for start in range(0, rows, step):
        b = min(step, rows - start)
        y = torch.randint(0, classes, (b,), generator=g)
        z = torch.randn(b, classes, generator=g) * 2.0
        z[torch.arange(b), y] += 6.0
        z[torch.rand(b, classes, generator=g) < 0.02] *= 1e-3
        writer.write(start, {"logits": z.half().numpy(), "labels": y.numpy()})
    writer.finalize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=1_000)
    ap.add_argument("--dir", default=None, help="Where to write the temporary Dump (default: the temp dir).")
    ap.add_argument("--keep", action="store_true", help="Keep the Dump afterwards.")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for ours (numpy's element-wise ops use one); 0 = torch's default.")
    ap.add_argument("--quick", action="store_true", help="20,000 x 100 logits (a smoke run of a few seconds)")
    ap.add_argument("--worker", choices=["ours", "ours-kde", "numpy"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.classes = 20_000, 100

    if args.worker:
        result = (worker_numpy(args.path) if args.worker == "numpy" else
                  worker_ours(args.path, args.worker == "ours-kde", args.threads))
        print(json.dumps(result))
        return

    base = Path(args.dir or tempfile.gettempdir())
    need = args.rows * args.classes * 2 + args.rows * 8
    free = shutil.disk_usage(base).free
    if need * 1.1 > free:
        sys.exit(f"not enough disk space in {base}: the Dump needs {need / 2**30:.2f} GiB, {free / 2**30:.2f} free")
    work = Path(tempfile.mkdtemp(prefix="repanalysis-bench-", dir=base))
    path = work / "dump"
    try:
        print(f"writing {args.rows:,} x {args.classes:,} float16 logits ({need / 2**30:.2f} GiB) to {path} ...")
        print(f"  written in {write_dump(path, args.rows, args.classes):.1f} s")
        runs = {"ours": _run_worker("ours", path, args.threads),
                "ours-kde": _run_worker("ours-kde", path, args.threads)}
        # numpy holds float32 logits plus three same-size temporaries at its peak
        numpy_need = args.rows * args.classes * 4 * 3.5 / 2**20
        if _mem_available_mib() < numpy_need * 1.2:
            runs["numpy"] = {"error": f"skipped: needs about {numpy_need / 1024:.1f} GiB, "
                                      f"{_mem_available_mib() / 1024:.1f} GiB available"}
        else:
            runs["numpy"] = _run_worker("numpy", path)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nlogit statistics of {args.rows:,} x {args.classes:,} float16 logits from a Dump "
          f"({os.cpu_count()} CPUs, 1-min load average {load:.1f}; the page cache holds the Dump; "
          f"ours with {args.threads or 'default'} torch thread(s))")
    print(f"{'method':<34}{'wall (s)':>10}{'CPU (s)':>10}{'peak RSS (MiB)':>16}{'RSS after import':>18}")
    labels = {"ours": "ours: streaming, no KDE", "ours-kde": "ours: streaming + KDE (10k rows)",
              "numpy": "numpy: whole array in memory"}
    for key, label in labels.items():
        r = runs[key]
        if "error" in r:
            print(f"{label:<34}  {r['error']}")
        else:
            print(f"{label:<34}{r['seconds']:>10.2f}{r['cpu_seconds']:>10.2f}{r['peak_rss_mib']:>16.0f}"
                  f"{r['rss_after_import_mib']:>18.0f}")
    ours, ref = runs["ours"], runs["numpy"]
    if "error" not in ours and "error" not in ref:
        print(f"\nratio numpy / ours: wall time {ref['seconds'] / ours['seconds']:.2f}x, "
              f"CPU time {ref['cpu_seconds'] / ours['cpu_seconds']:.2f}x, "
              f"peak RSS {ref['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x")
        worst = max(abs(ours["means"][s] - ref["means"][s]) / max(abs(ref["means"][s]), 1e-12)
                    for s in ref["means"])
        ok = agree(f"means of {len(ref['means'])} statistics, ours vs numpy (relative)", worst, REL_TOLERANCE)
    else:
        ok = "error" not in ours and ref["error"].startswith("skipped")   # numpy skipped for memory: no failure
        print("means not compared: " + "; ".join(f"{k}: {r['error']}" for k, r in runs.items() if "error" in r))
    if "error" not in ours:
        verdict = "meets" if ours["peak_rss_mib"] < 2048 else "MISSES"
        print(f"ours peak RSS {ours['peak_rss_mib']:.0f} MiB {verdict} the < 2 GiB target")
    if not ok or "error" in runs["ours-kde"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
