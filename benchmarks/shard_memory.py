"""Peak memory of separation + calibration over 8 shards (mergeable statistics) vs on the merged Dump.

Data: a seeded, class-structured synthetic extraction of ImageNet-train size (default N = 1,281,167 rows,
K = 1,000 float32 logits, D = 2,048 float32 features, int64 labels and ids: about 15.6 GB), written directly as
8 shard Dumps of contiguous rows (``repanalysis.dump.shards.shard_rows(i, 8, N, 256)``, each shard's meta naming
its range and the run) with ``DumpWriter``, 50,000 rows at a time (never one giant array in memory): labels
uniform over K, features = ReLU(class mean + noise), logits = features W + noise (W from the class means, so
the accuracy is well above chance and below 1). Then ``merge_dumps`` builds the merged Dump (its time is
reported: the cost of ``merge-dumps`` at this scale).
- shards: ``shard_statistics(shard)`` for each of the 8 shards in turn (one process: the peak is that of the
  largest shard, as on the machine holding it), ``merge_statistics([...]).compute()``. Note that
  ``shard_statistics`` also computes the logit statistics and confusion counts in its pass over the logits.
- merged: ``class_separation(dump)`` and ``calibrate_dumps([dump])`` (what the ``calibration`` command runs:
  ``calibration_report(dump.logits, dump.labels, ...)``, which also gives the adaptive ECE, not mergeable).
Each side runs in its own fresh subprocess, so its peak RSS (VmHWM) is its own; the RSS after the imports is
shown too, so the table gives the analyses' own increase. Memory-mapped pages count in RSS until released (the
library releases them as it streams: part of what is measured). The shards side runs first, right after the
merge, so the page cache favours the merged side's wall time, if anything. The numbers (d_within, d_total,
R^2, ECE, NLL, accuracy) must agree to 1e-9 relative: prints ``agree: ...`` and exits 1 when they do not.
Free disk space for shards + merged Dump (2 x the data + 10%) is checked first. The folder (``--folder``,
default a new one in the temporary directory) loses what the script wrote unless ``--keep``; re-running with
``--folder`` on a kept folder of the same sizes and seed reuses the data.

    .venv/bin/python benchmarks/shard_memory.py                      # full size, about 31 GB of disk
    .venv/bin/python benchmarks/shard_memory.py --rows 200000 --dim 256
    .venv/bin/python benchmarks/shard_memory.py --quick              # 20,000 x (100 + 64): seconds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from _memory import rss_mib  # noqa: E402

SHARDS = 8
BATCH = 256          # shards are whole batches of the (notional) extraction
CHUNK = 50_000       # rows generated at a time
N_BINS = 15
TOLERANCE = 1e-9     # relative: the float64 sums differ only in their order
METRICS = (("separation", "d_within"), ("separation", "d_total"), ("separation", "r2"),
           ("calibration", "ece"), ("calibration", "nll"), ("calibration", "accuracy"))




def data_bytes(n: int, k: int, d: int) -> int:
    return n * (4 * k + 4 * d + 8 + 8)


def run_id(n: int, k: int, d: int, seed: int) -> str:
    return f"shard-memory-bench-N{n}-K{k}-D{d}-seed{seed}"


def _complete(path: Path, run: str) -> bool:
    """A complete Dump of this run at ``path`` (a shard or the merged Dump)?"""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("complete")) and run in (meta.get("fingerprint"), (meta.get("shard") or {}).get("run"))


def write_shards(folder: Path, n: int, k: int, d: int, seed: int) -> list[Path]:
    """The 8 shard Dumps of the synthetic run, each written chunk by chunk into its memory-mapped arrays."""
    from repanalysis.dump.shards import shard_rows
    from repanalysis.extract.store import DumpWriter

    run = run_id(n, k, d, seed)
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d), dtype=np.float32)
    # the class-mean direction scaled so the true class gains about 4 (E[ReLU(m + e) m] = 1/2 per dimension),
    # against unit logit noise: accuracy around 0.7 at K = 1,000; x 1.5 makes the model overconfident
    w = np.ascontiguousarray(means.T * np.float32(4.0 / (0.5 * d)))            # (D, K)
    specs = {"logits": ((k,), np.float32), "labels": ((), np.int64), "features": ((d,), np.float32),
             "ids": ((), np.int64)}
    paths = []
    for i in range(SHARDS):
        start, stop = shard_rows(i, SHARDS, n, BATCH)
        path = folder / f"shard-{i}"
        paths.append(path)
        if _complete(path, run):
            continue
        meta = {"name": "synthetic", "num_classes": k, "fingerprint": f"{run}-shard-{i}-of-{SHARDS}",
                "shard": {"index": i, "count": SHARDS, "start": start, "stop": stop, "total": n, "run": run}}
        if path.exists():
            shutil.rmtree(path)             # an unfinished shard of an earlier run: start it again
        writer = DumpWriter(path, stop - start, specs, meta)
        for c, s in enumerate(range(0, stop - start, CHUNK)):
            m = min(CHUNK, stop - start - s)
            r = np.random.default_rng([seed, i, c])
            y = r.integers(0, k, m)
            h = means[y]
            h += r.standard_normal((m, d), dtype=np.float32)
            np.maximum(h, 0, out=h)
            z = h @ w
            z += r.standard_normal((m, k), dtype=np.float32)
            z *= np.float32(1.5)
            writer.write(s, {"logits": z, "labels": y, "features": h, "ids": np.arange(start + s, start + s + m)})
            writer.commit(s + m)
        writer.finalize()
        del writer                          # unmap this shard's arrays before the next
    return paths


def side_shards(folder: Path) -> dict:
    from repanalysis.analyze.mergeable import merge_statistics, shard_statistics

    paths = sorted(folder.glob("shard-*"), key=lambda p: int(p.name.split("-")[1]))
    stats, per = [], []
    for p in paths:
        t = time.perf_counter()
        stats.append(shard_statistics(p, n_bins=N_BINS))
        per.append(time.perf_counter() - t)
    res = merge_statistics(stats).compute()
    return {"values": {f"{a}.{m}": float(getattr(getattr(res, a), m)) for a, m in METRICS},
            "parts": {"slowest shard": max(per), "mean shard": sum(per) / len(per)}}


def side_merged(folder: Path) -> dict:
    from repanalysis.analyze.calibration import calibrate_dumps
    from repanalysis.analyze.geometry import class_separation
    from repanalysis.dump import load_dump

    dump = load_dump(folder / "merged")
    t = time.perf_counter()
    sep = class_separation(dump)
    t_sep = time.perf_counter() - t
    t = time.perf_counter()
    cal = calibrate_dumps([dump], n_bins=N_BINS, device="cpu", progress=False)[0]
    t_cal = time.perf_counter() - t
    res = {"separation": sep, "calibration": cal}
    return {"values": {f"{a}.{m}": float(getattr(res[a], m)) for a, m in METRICS},
            "parts": {"separation": t_sep, "calibration": t_cal}}


def worker(side: str, folder: Path) -> dict:
    rss_start, _ = rss_mib()
    # both sides import the same modules, so the RSS after the imports is comparable
    import repanalysis.analyze.calibration  # noqa: F401
    import repanalysis.analyze.geometry  # noqa: F401
    import repanalysis.analyze.mergeable  # noqa: F401
    import repanalysis.dump  # noqa: F401

    rss_import, _ = rss_mib()
    t0 = time.perf_counter()
    out = (side_shards if side == "shards" else side_merged)(folder)
    sec = time.perf_counter() - t0
    return {"side": side, "seconds": sec, "rss_start_mib": rss_start, "rss_import_mib": rss_import,
            "peak_rss_mib": rss_mib()[1], **out}


def run_side(side: str, folder: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--side", side, "--folder", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{side} side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_281_167, help="N, rows of the whole run")
    ap.add_argument("--classes", type=int, default=1000, help="K, logits per row")
    ap.add_argument("--dim", type=int, default=2048, help="D, features per row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", default=None, help="where the shards and the merged Dump go (default: a new "
                                                   "folder in the temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the shards and the merged Dump")
    ap.add_argument("--quick", action="store_true", help="N = 20,000, K = 100, D = 64: seconds")
    ap.add_argument("--side", choices=("shards", "merged"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(worker(args.side, Path(args.folder))))
        return
    if args.quick:
        args.rows, args.classes, args.dim = 20_000, 100, 64
    n, k, d = args.rows, args.classes, args.dim
    if n < SHARDS * BATCH:
        raise SystemExit(f"--rows {n} is too few for {SHARDS} shards of whole {BATCH}-row batches; expected at "
                         f"least {SHARDS * BATCH}")
    created = args.folder is None or not Path(args.folder).exists()
    folder = Path(tempfile.mkdtemp(prefix="shard_memory_") if args.folder is None else args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    run = run_id(n, k, d, seed=args.seed)
    size = data_bytes(n, k, d)
    reused = [p for p in [*(folder / f"shard-{i}" for i in range(SHARDS)), folder / "merged"] if _complete(p, run)]
    need = (2 * size - sum(data_bytes(1, k, d) * json.loads((p / "meta.json").read_text())["num_samples"]
                           for p in reused)) * 1.1
    free = shutil.disk_usage(folder).free
    if free < need:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise SystemExit(f"not enough disk space: the shards and the merged Dump need {need / 2**30:.1f} GiB "
                         f"(2 x {size / 2**30:.1f} GiB + 10%) and {folder} has {free / 2**30:.1f} GiB free")
    ours = [folder / f"shard-{i}" for i in range(SHARDS)] + [folder / "merged"]
    ok = False
    try:
        import repanalysis  # noqa: F401
        from repanalysis.extract.merge import merge_dumps

        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"synthetic run: N = {n:,} rows, K = {k:,} float32 logits, D = {d:,} float32 features, "
              f"{size / 2**30:.2f} GiB in {SHARDS} shards, in {folder}; {os.cpu_count()} CPU cores, load "
              f"average {load:.1f} at start", flush=True)
        t0 = time.perf_counter()
        shards = write_shards(folder, n, k, d, args.seed)
        t_write = time.perf_counter() - t0
        merged = folder / "merged"
        t0 = time.perf_counter()
        if not _complete(merged, run):
            if merged.exists():
                shutil.rmtree(merged)
            merge_dumps(shards, merged)
        t_merge = time.perf_counter() - t0
        again = " (reused)" if reused else ""
        print(f"wrote the {SHARDS} shards in {t_write:.1f} s{again}; merge_dumps -> merged Dump in {t_merge:.1f} s "
              f"({size / 2**30 / max(t_merge, 1e-9):.2f} GiB/s){again}", flush=True)

        res = {side: run_side(side, folder) for side in ("shards", "merged")}
        label = {"shards": f"{SHARDS} shards: shard_statistics + merge",
                 "merged": "merged Dump: class_separation + calibrate_dumps"}
        print(f"\n{'side':<48} {'time s':>8} {'RSS after imports':>18} {'peak RSS':>9} {'increase':>9}  (MiB)")
        for side, r in res.items():
            print(f"{label[side]:<48} {r['seconds']:8.2f} {r['rss_import_mib']:18.0f} {r['peak_rss_mib']:9.0f} "
                  f"{r['peak_rss_mib'] - r['rss_import_mib']:9.0f}")
        for side, r in res.items():
            print(f"  {side}: " + ", ".join(f"{p} {s:.2f} s" for p, s in r["parts"].items()))
        a, b = res["shards"], res["merged"]
        print(f"peak RSS merged / shards: {b['peak_rss_mib'] / a['peak_rss_mib']:.1f} x (increase over the imports: "
              f"{(b['peak_rss_mib'] - b['rss_import_mib']) / max(a['peak_rss_mib'] - a['rss_import_mib'], 1):.1f} x)")
        print("\n" + "  ".join(f"{key.split('.')[1]}: {a['values'][key]:.10g} / {b['values'][key]:.10g}"
                               for key in a["values"]) + "   (shards / merged)")
        diff = max((abs(a["values"][key] - b["values"][key]) / max(abs(b["values"][key]), 1e-300)
                    if b["values"][key] != 0 else abs(a["values"][key]) for key in a["values"]), default=math.nan)
        if any(not math.isfinite(v) for r in (a, b) for v in r["values"].values()):
            diff = math.nan
        ok = agree("d_within, d_total, R^2, ECE, NLL, accuracy, 8 shards vs merged Dump (relative)", diff, TOLERANCE)
    finally:
        if not args.keep:
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                for p in ours:
                    shutil.rmtree(p, ignore_errors=True)
        else:
            print(f"kept {folder}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
