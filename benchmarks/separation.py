"""Class separation (d_within, d_total, R^2): our O(N*D) closed form vs the brute force a user would write.

Part 1, speed, on N x D = 50,000 x 2,048 float32 features of 1,000 classes (50 per class):
- ours:  ``repanalysis.analyze.geometry.class_separation`` (streaming closed form, float64 accumulators);
- brute force with scikit-learn's ``cosine_distances``: d_within per class (1,000 blocks of 50 x 50, run in
  full), and d_total over all N^2 ordered pairs. The full N x N matrix (2.5e9 entries, 20 GB in float64)
  does not fit here, so d_total's brute force runs on a class-stratified subsample of ``--sub`` rows and its
  time is scaled by (N / sub)^2 (the cost is quadratic in N); the script says so in its output.
  Both sides' numbers are compared on the subsample (same definitions: ordered pairs, self-pairs, class-
  balanced, not centred).
  The script prints ``agree: ... max|diff| = ... <= tol`` and exits 1 when the two sides disagree.
Part 2, memory: a 1,281,167-row float16 Dump (ImageNet-train-sized: 2,048-d features and 1,000 logits, the
features through a random linear classifier, about 7.3 GiB) written to a temporary folder with DumpWriter, then
``class_separation(dump)`` in a subprocess whose peak RSS (VmHWM) is reported. The Dump is deleted afterwards.
``--no-large`` skips part 2; ``--quick`` runs both parts at small sizes in seconds (what the tests run).

    .venv/bin/python benchmarks/separation.py
    .venv/bin/python benchmarks/separation.py --no-large --rows 20000
    .venv/bin/python benchmarks/separation.py --quick
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from _memory import peak_rss_mib  # noqa: E402




def make_features(n: int, d: int, k: int, seed: int = 0, dtype=np.float32):
    """Class-structured, non-negative (ReLU-like) features: class mean + noise, clipped at 0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), int(np.ceil(n / k)))[:n]
    rng.shuffle(labels)
    means = rng.standard_normal((k, d), dtype=np.float32)
    feats = means[labels]
    feats += rng.standard_normal((n, d), dtype=np.float32)
    np.maximum(feats, 0, out=feats)
    return feats.astype(dtype, copy=False), labels


def brute_within(feats, labels, k):
    """d_within and per-class terms with sklearn cosine_distances, class by class (ordered pairs, self-pairs)."""
    from sklearn.metrics.pairwise import cosine_distances

    per = np.array([cosine_distances(feats[labels == c]).mean() for c in range(k)])
    return per.mean(), per


def brute_total(feats, labels, k):
    """d_total over all ordered pairs with sklearn cosine_distances: class-pair block means, each weighted 1/K^2."""
    from sklearn.metrics.pairwise import cosine_distances

    dist = cosine_distances(feats)                          # (n, n), all ordered pairs
    onehot = np.zeros((len(labels), k))
    onehot[np.arange(len(labels)), labels] = 1.0
    counts = onehot.sum(0)
    block = onehot.T @ dist @ onehot / np.outer(counts, counts)  # mean distance of every class pair
    return block.mean()


# sklearn's cosine_distances works in the features' float32; ours accumulates in float64
TOLERANCE = 1e-5


def timed(fn, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def part_speed(n, d, k, sub, repeats):
    import repanalysis  # noqa: F401
    from repanalysis.analyze.geometry import class_separation

    feats, labels = make_features(n, d, k)
    t_ours, r = timed(lambda: class_separation(feats, labels), repeats)
    t_within, (bw, _) = timed(lambda: brute_within(feats, labels, k))
    # class-stratified subsample for the all-pairs brute force
    per_class = max(1, sub // k)
    rng = np.random.default_rng(1)
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(k)])
    fs, ls = feats[idx], labels[idx]
    t_total_sub, bt = timed(lambda: brute_total(fs, ls, k))
    t_total_full = t_total_sub * (n / len(idx)) ** 2
    r_sub = class_separation(fs, ls)
    bw_sub, _ = brute_within(fs, ls, k)
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"features: {n:,} x {d:,} float32, {k:,} classes ({n // k} per class); best of {repeats} for ours; "
          f"{os.cpu_count()} CPU cores, load average {load:.1f} at start")
    print(f"ours (closed form, streaming):            {t_ours:8.3f} s   d_within={r.d_within:.6f} "
          f"d_total={r.d_total:.6f} R^2={r.r2:.6f}")
    print(f"sklearn cosine_distances, d_within:        {t_within:8.3f} s   (per class, full data) "
          f"d_within={bw:.6f}  |diff|={abs(bw - r.d_within):.1e}")
    print(f"sklearn cosine_distances, d_total:         {t_total_sub:8.3f} s   on a {len(idx):,}-row subsample "
          f"({per_class}/class)")
    print(f"  scaled as N^2 to {n:,} rows:            {t_total_full:8.1f} s   (estimate: N x N matrix = "
          f"{n * n * 8 / 2**30:.1f} GiB in float64{', does not fit in memory here' if n > 20_000 else ''})")
    brute = t_within + t_total_full
    print(f"brute force total (within + all pairs):    {brute:8.1f} s")
    print(f"ratio brute force / ours:                  {brute / t_ours:8.0f} x   (d_within part alone: "
          f"{t_within / t_ours:.1f} x, though ours also computes d_total in that time)")
    print(f"check on the subsample: ours d_within={r_sub.d_within:.8f} d_total={r_sub.d_total:.8f}; brute "
          f"d_within={bw_sub:.8f} d_total={bt:.8f}")
    diff = max(abs(r_sub.d_within - bw_sub), abs(r_sub.d_total - bt), abs(bw - r.d_within))
    return agree("d_within (full data and subsample) and d_total (subsample), ours vs sklearn", diff, TOLERANCE)


def worker(path: str) -> dict:
    rss0 = peak_rss_mib()
    import repanalysis  # noqa: F401
    from repanalysis.analyze.geometry import class_separation
    from repanalysis.extract.store import load_dump

    rss_import = peak_rss_mib()
    t0 = time.perf_counter()
    r = class_separation(load_dump(path))
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib(), "rss_before_import_mib": rss0,
            "rss_after_import_mib": rss_import, "d_within": r.d_within, "d_total": r.d_total, "r2": r.r2,
            "n": r.n_samples}


def part_memory(rows, d, k, folder):
    """Write an ImageNet-train-sized Dump as an extraction would (logits, labels, features, classifier
    weights; a Dump always comes from a forward pass, so its logits are real: the features through a random
    linear classifier W, b), then time and measure ``class_separation(load_dump(path))`` in a subprocess."""
    import torch

    import repanalysis  # noqa: F401
    from repanalysis.extract.store import DumpWriter

    need = rows * (d + k) * 2 / 2**30
    free = shutil.disk_usage(folder).free / 2**30
    if free < need * 1.2:
        print(f"memory part skipped: the Dump needs {need:.1f} GiB and {folder} has {free:.1f} GiB free")
        return
    tmp = Path(tempfile.mkdtemp(prefix="sep_bench_", dir=folder))
    try:
        path = tmp / "dump"
        t0 = time.perf_counter()
        rng = np.random.default_rng(2)
        means = rng.standard_normal((k, d), dtype=np.float32)
        weight = rng.standard_normal((k, d), dtype=np.float32) / np.float32(np.sqrt(d))
        bias = rng.standard_normal(k, dtype=np.float32) * np.float32(0.1)
        w = DumpWriter(path, rows, {"logits": ((k,), np.float16), "labels": ((), np.int64),
                                    "features": ((d,), np.float16)}, {"name": "bench", "num_classes": k},
                       static_arrays={"classifier_weight": weight, "classifier_bias": bias})
        chunk = 65536
        for start in range(0, rows, chunk):
            m = min(chunk, rows - start)
            y = rng.integers(0, k, m)
            f = means[y] + rng.standard_normal((m, d), dtype=np.float32)
            np.maximum(f, 0, out=f)
            f16 = f.astype(np.float16)
            z = torch.addmm(torch.from_numpy(bias), torch.from_numpy(f16.astype(np.float32)),
                            torch.from_numpy(weight).T)                     # logits = h W^T + b
            w.write(start, {"logits": z.half().numpy(), "labels": y, "features": f16})
        w.finalize()
        print(f"\nwrote a {rows:,}-row float16 Dump: features {rows:,} x {d:,}, logits {rows:,} x {k:,} "
              f"(= features W^T + b, random W), {need:.2f} GiB, in {time.perf_counter() - t0:.0f} s")
        out = subprocess.run([sys.executable, __file__, "--worker", str(path)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"worker failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"class_separation(dump) streamed it in {res['seconds']:.1f} s; peak RSS (VmHWM) "
              f"{res['peak_rss_mib']:.0f} MiB, of which {res['rss_after_import_mib']:.0f} MiB is the Python + "
              f"torch import; d_within={res['d_within']:.4f} d_total={res['d_total']:.4f} R^2={res['r2']:.4f}")
        print(f"target < 2048 MiB: {'met' if res['peak_rss_mib'] < 2048 else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--sub", type=int, default=5000, help="subsample rows for the all-pairs brute force")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-rows", type=int, default=1_281_167)
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (seconds): 4,000 x 256, 100 classes; a 20,000-row Dump for part 2")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    if args.quick:
        args.rows, args.dim, args.classes, args.sub, args.repeats = 4000, 256, 100, 2000, 1
        args.large_rows = 20_000
    ok = part_speed(args.rows, args.dim, args.classes, args.sub, args.repeats)
    if not args.no_large:
        part_memory(args.large_rows, args.dim, args.classes, Path(args.tmp))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
