"""Linear CKA of two feature sets: our streamed exact CKA vs the straightforward numpy ways a user would write.

Two seeded feature sets of N x D = 50,000 x 2,048 float32 (ReLU-like, sharing a 64-d latent so that their CKA is
neither 0 nor 1) are written as two Dumps (features, plus 10 logits and labels, as extraction leaves them) in a
temporary folder. Each side then runs in its own subprocess, so that its peak RSS (VmHWM) is its own:

- ours: ``cka_matrix([load_dump(a), load_dump(b)])``: streams 8,192-row chunks through the memory maps into
  float64 feature-space accumulators (X^T X, Y^T Y, X^T Y, column sums; D x D each), never an N x N matrix;
  once with float64 chunk products (the default) and once with ``precision="float32"`` (float32 products, still
  accumulated in float64);
- numpy, feature space (Kornblith et al.'s colab ``feature_space_linear_cka``): load both arrays into memory,
  centre them, ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), in the features' float32 as the colab does;
- numpy, Gram matrices (the colab's ``gram_linear`` + ``center_gram`` + ``cka``, what most CKA snippets do): the
  N x N Gram of each set, centred, then <K_c, L_c> / (||K_c|| ||L_c||), in float64. An N x N float64 matrix at
  N = 50,000 takes 18.6 GiB (and this way holds three), which does not fit here, so it runs on the first
  ``--sub`` rows and its time is scaled by (N / sub)^2 (its Gram products and centring are quadratic in N);
  the output says so. Ours is run on the same subsample to compare values.

Timings are the computation only (after each side's imports and, for numpy, after the arrays are read); peak
RSS is the whole subprocess's. ``agree: ...`` compares ours with the numpy feature-space value on the full data
and with the Gram value on the subsample. ``--minibatch B`` adds our minibatch CKA (Nguyen et al. 2021) of the
full data for information. ``--quick`` runs 4,000 x 256 (seconds; what the tests run).

    .venv/bin/python benchmarks/cka.py
    .venv/bin/python benchmarks/cka.py --rows 20000 --dim 1024
    .venv/bin/python benchmarks/cka.py --quick
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

# the colab way runs in the features' float32 over N rows; ours in float64: they agree to float32 rounding
FEATURE_TOL = 1e-5
GRAM_TOL = 1e-10          # both float64 on the same subsample




def make_dumps(folder: Path, n: int, d: int, seed: int = 0, chunk: int = 8192) -> list[Path]:
    """Two Dumps of the same n images: features relu(latent W + noise) of width d, float32."""
    import repanalysis  # noqa: F401
    from repanalysis.extract.store import DumpWriter

    rng = np.random.default_rng(seed)
    k, latent = 10, 64
    w = [rng.standard_normal((latent, d), dtype=np.float32) / np.float32(8) for _ in range(2)]
    labels = rng.integers(0, k, n)
    paths = [folder / "model_a", folder / "model_b"]
    writers = [DumpWriter(p, n, {"logits": ((k,), np.float32), "labels": ((), np.int64),
                                 "features": ((d,), np.float32)}, {"name": p.name, "num_classes": k})
               for p in paths]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = rng.standard_normal((m, latent), dtype=np.float32)
        y = labels[start:start + m]
        for i, writer in enumerate(writers):
            h = z @ w[i]
            h += rng.standard_normal((m, d), dtype=np.float32) * np.float32(0.5 + i)
            np.maximum(h, 0, out=h)
            writer.write(start, {"features": h, "logits": h[:, :k].copy(), "labels": y})
    for writer in writers:
        writer.finalize()
    return paths


def worker(side: str, a: str, b: str, rows: int | None) -> dict:
    t_import = time.perf_counter()
    if side.startswith("ours") or side.startswith("minibatch"):
        import repanalysis  # noqa: F401
        from repanalysis.analyze.cka import cka_matrix
        from repanalysis.extract.store import load_dump
    rss_start = peak_rss_mib()        # after the imports, before any data is read
    if side.startswith("ours"):
        dumps = [load_dump(a), load_dump(b)]
        if rows is not None:
            dumps = [dump.subset(np.arange(rows)) for dump in dumps]
        rss0, t0 = peak_rss_mib(), time.perf_counter()
        value = float(cka_matrix(dumps, precision="float32" if side == "ours32" else "float64").matrix[0, 1])
    elif side.startswith("minibatch"):
        dumps = [load_dump(a), load_dump(b)]
        rss0, t0 = peak_rss_mib(), time.perf_counter()
        value = float(cka_matrix(dumps, method="minibatch", batch_size=int(side.split(":")[1]), seed=0).matrix[0, 1])
    elif side == "colab":
        x = np.load(Path(a) / "features.npy")
        y = np.load(Path(b) / "features.npy")
        rss0, t0 = peak_rss_mib(), time.perf_counter()
        # Kornblith et al. colab, feature_space_linear_cka (debiased=False)
        x = x - np.mean(x, 0, keepdims=True)
        y = y - np.mean(y, 0, keepdims=True)
        dot = np.linalg.norm(x.T.dot(y)) ** 2
        value = float(dot / (np.linalg.norm(x.T.dot(x)) * np.linalg.norm(y.T.dot(y))))
    elif side == "gram":
        x = np.load(Path(a) / "features.npy", mmap_mode="r")[:rows].astype(np.float64)
        y = np.load(Path(b) / "features.npy", mmap_mode="r")[:rows].astype(np.float64)
        rss0, t0 = peak_rss_mib(), time.perf_counter()

        def center_gram(g):             # Kornblith et al. colab, center_gram (unbiased=False)
            g = g.copy()
            means = np.mean(g, 0, dtype=np.float64)
            means -= np.mean(means) / 2
            g -= means[:, None]
            g -= means[None, :]
            return g

        gx, gy = center_gram(x.dot(x.T)), center_gram(y.dot(y.T))
        value = float(gx.ravel().dot(gy.ravel()) / (np.linalg.norm(gx) * np.linalg.norm(gy)))
    else:
        raise SystemExit(f"unknown side {side}")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "value": value, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": rss0,
            "rss_start_mib": rss_start, "work_mib": peak_rss_mib() - rss_start,
            "setup_seconds": t0 - t_import}


def run_side(side: str, paths, rows=None, device_note="") -> dict:
    cmd = [sys.executable, __file__, "--worker", side, str(paths[0]), str(paths[1])]
    if rows is not None:
        cmd += ["--worker-rows", str(rows)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{side} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--sub", type=int, default=5000, help="rows for the N x N Gram-matrix way")
    ap.add_argument("--minibatch", type=int, default=1024, help="also time minibatch CKA with this batch (0: no)")
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--quick", action="store_true", help="4,000 x 256, Gram way on 1,000 rows (seconds)")
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-rows", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.worker_rows)))
        return
    if args.quick:
        args.rows, args.dim, args.sub, args.minibatch = 4000, 256, 1000, 256
    n, d, sub = args.rows, args.dim, min(args.sub, args.rows)
    need = 2 * n * (d + 11) * 4 / 2**30
    tmp = Path(tempfile.mkdtemp(prefix="cka_bench_", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        paths = make_dumps(tmp, n, d)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"two Dumps of {n:,} x {d:,} float32 features ({need:.2f} GiB on disk) written in "
              f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPU cores, load average {load:.1f}; "
              "each side in its own subprocess, CPU")
        ours = run_side("ours", paths)
        ours32 = run_side("ours32", paths)
        colab = run_side("colab", paths)
        gram = run_side("gram", paths, rows=sub)
        ours_sub = run_side("ours", paths, rows=sub)
        scale = (n / sub) ** 2
        gram_full_gib = 3 * n * n * 8 / 2**30
        print("peak RSS: the whole subprocess; data + work: the peak above the RSS after the imports (torch's "
              f"~{ours['rss_start_mib']:.0f} MiB for ours, numpy's ~{colab['rss_start_mib']:.0f} MiB)")
        print(f"ours, exact streamed (cka_matrix on the Dumps): {ours['seconds']:8.2f} s   peak RSS "
              f"{ours['peak_rss_mib']:7.0f} MiB, data + work {ours['work_mib']:6.0f} MiB   CKA = {ours['value']:.8f}")
        print(f"ours, exact streamed, float32 chunk products:   {ours32['seconds']:8.2f} s   peak RSS "
              f"{ours32['peak_rss_mib']:7.0f} MiB, data + work {ours32['work_mib']:6.0f} MiB   "
              f"CKA = {ours32['value']:.8f}")
        print(f"numpy feature space (colab way, float32):       {colab['seconds']:8.2f} s   peak RSS "
              f"{colab['peak_rss_mib']:7.0f} MiB, data + work {colab['work_mib']:6.0f} MiB   "
              f"CKA = {colab['value']:.8f}")
        print(f"numpy Gram matrices (colab way, float64) on {sub:,} rows: {gram['seconds']:.2f} s, peak RSS "
              f"{gram['peak_rss_mib']:.0f} MiB, data + work {gram['work_mib']:.0f} MiB, CKA = {gram['value']:.8f} "
              f"(ours on the same rows: {ours_sub['value']:.8f}, {ours_sub['seconds']:.2f} s)")
        print(f"  scaled as N^2 to {n:,} rows: {gram['seconds'] * scale:8.1f} s (estimate; it holds at least three N x N "
              f"float64 matrices = {gram_full_gib:.1f} GiB{', which do not fit in memory here' if gram_full_gib > 16 else ''})")
        print(f"ratio numpy feature space / ours: {colab['seconds'] / ours['seconds']:.2f} x time, "
              f"{colab['peak_rss_mib'] / ours['peak_rss_mib']:.2f} x peak RSS, "
              f"{colab['work_mib'] / max(ours['work_mib'], 1):.1f} x data + work memory; with float32 products: "
              f"{colab['seconds'] / ours32['seconds']:.2f} x time")
        print(f"ratio numpy Gram (scaled) / ours: {gram['seconds'] * scale / ours['seconds']:.0f} x time")
        if args.minibatch:
            mb = run_side(f"minibatch:{args.minibatch}", paths)
            print(f"ours, minibatch CKA (batch {args.minibatch}, seed 0):   {mb['seconds']:8.2f} s   peak RSS "
                  f"{mb['peak_rss_mib']:7.0f} MiB, data + work {mb['work_mib']:6.0f} MiB   "
                  f"CKA = {mb['value']:.8f} (|minibatch - exact| = "
                  f"{abs(mb['value'] - ours['value']):.1e}; an estimate, not compared)")
        ok = agree("exact CKA, ours vs numpy feature space (full data)",
                   abs(ours["value"] - colab["value"]), FEATURE_TOL)
        ok = agree("exact CKA, ours with float32 products vs numpy feature space (full data)",
                   abs(ours32["value"] - colab["value"]), FEATURE_TOL) and ok
        ok = agree(f"exact CKA, ours vs numpy Gram matrices ({sub:,} rows)",
                   abs(ours_sub["value"] - gram["value"]), GRAM_TOL) and ok
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
