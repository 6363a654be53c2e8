"""Feature OOD scores: our streaming torch Mahalanobis and chunked KNN vs the straightforward numpy / sklearn way.

Seeded synthetic features (class means + noise, ReLU-clipped): ``--train`` x ``--dim`` training rows
(default 50,000 x 2,048, 10 classes) and ``--test`` in-distribution + ``--test`` shifted "OOD" rows
(default 10,000 + 10,000), all float32.
- Mahalanobis (Lee et al. 2018, tied covariance): ours = ``repanalysis.analyze.ood_features.MahalanobisFit``
  (streaming float64 sums and scatter, pinv, expanded quadratic form per chunk); numpy (in float64) = class means, the
  covariance of the class-centred features, ``np.linalg.pinv``, then per class ``((x - mu) @ P * (x - mu)).sum(1)``.
- KNN (Sun et al. 2022, L2-normalised, k = 50): ours = ``KNNFit`` (float32 bank, blocks + torch.topk);
  sklearn = ``NearestNeighbors(n_neighbors=k, algorithm="brute").kneighbors``.
Each side runs in its own subprocess (fit + score of all test rows); time and peak RSS (VmHWM) are reported,
peak minus the RSS once the data is made. Prints ``agree: ...`` and exits 1 when the two sides disagree.

    .venv/bin/python benchmarks/ood_features.py
    .venv/bin/python benchmarks/ood_features.py --quick
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from _memory import rss_mib  # noqa: E402




def make_data(n, n_test, d, k, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, d), dtype=np.float32)
    y = rng.integers(0, k, n)
    h = np.maximum(means[y] + rng.standard_normal((n, d), dtype=np.float32), 0)
    yi = rng.integers(0, k, n_test)
    hi = np.maximum(means[yi] + rng.standard_normal((n_test, d), dtype=np.float32), 0)
    ho = np.maximum(rng.standard_normal((n_test, d), dtype=np.float32) * 1.5 + 0.3, 0)
    return h, y, np.concatenate([hi, ho])


def ours_mahalanobis(h, y, x):
    from repanalysis import Dump
    from repanalysis.analyze.ood_features import MahalanobisFit

    fit = MahalanobisFit(Dump.from_arrays(np.zeros((len(y), int(y.max()) + 1), np.float32), y, h))
    import torch

    return np.concatenate([fit.score(torch.from_numpy(x[s:s + 8192]).double())["mahalanobis"].numpy()
                           for s in range(0, len(x), 8192)])


def numpy_mahalanobis(h, y, x):
    h, x = h.astype(np.float64), x.astype(np.float64)      # float32 scatter sums lose ~1e-6 of the scores
    classes = np.unique(y)
    mu = np.stack([h[y == c].mean(0) for c in classes])
    r = h - mu[np.searchsorted(classes, y)]
    p = np.linalg.pinv(r.T @ r / len(h))
    md = np.stack([((x - m) @ p * (x - m)).sum(1) for m in mu], 1)
    return -md.min(1)


def ours_knn(h, y, x, k):
    import torch

    from repanalysis import Dump
    from repanalysis.analyze.ood_features import KNNFit

    fit = KNNFit(Dump.from_arrays(np.zeros((len(y), 1), np.float32), y, h), k=k)
    return np.concatenate([fit.score(torch.from_numpy(x[s:s + 8192])).numpy() for s in range(0, len(x), 8192)])


def sklearn_knn(h, y, x, k):
    from sklearn.neighbors import NearestNeighbors

    nrm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    dist, _ = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(nrm(h)).kneighbors(nrm(x))
    return -dist[:, -1].astype(np.float64)


def worker(args):
    import repanalysis  # noqa: F401  (imports outside the timing and before the data)

    h, y, x = make_data(args.train, args.test, args.dim, args.classes)
    rss0, _ = rss_mib()
    fn = {"ours_mahalanobis": ours_mahalanobis, "numpy_mahalanobis": numpy_mahalanobis,
          "ours_knn": lambda *a: ours_knn(*a, args.k), "sklearn_knn": lambda *a: sklearn_knn(*a, args.k)}[args.worker]
    t0 = time.perf_counter()
    s = fn(h, y, x)
    sec = time.perf_counter() - t0
    out = Path(args.scores)
    np.save(out, s)
    print(json.dumps({"seconds": sec, "peak_mib": rss_mib()[1], "data_mib": rss0}))


def run(side, args, tmp):
    path = Path(tmp) / f"{side}.npy"
    cmd = [sys.executable, __file__, "--worker", side, "--scores", str(path), "--train", str(args.train), "--test",
           str(args.test), "--dim", str(args.dim), "--classes", str(args.classes), "--k", str(args.k)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res, np.load(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=50_000)
    ap.add_argument("--test", type=int, default=10_000, help="in-distribution rows, and as many OOD rows")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--scores", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.train, args.test, args.dim, args.k = 2000, 500, 64, 10
    import os
    import tempfile

    print(f"train {args.train:,} x {args.dim:,} float32, {args.classes} classes; test {args.test:,} in + "
          f"{args.test:,} OOD; KNN k = {args.k}; {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for what, ours, theirs, tol, rel in (
                ("Mahalanobis", "ours_mahalanobis", "numpy_mahalanobis", 1e-6, True),
                ("KNN k-th distance", "ours_knn", "sklearn_knn", 1e-5, False)):
            ro, so = run(ours, args, tmp)
            rt, st = run(theirs, args, tmp)
            print(f"{what}: ours {ro['seconds']:7.2f} s, peak RSS {ro['peak_mib']:6.0f} MiB "
                  f"(+{ro['peak_mib'] - ro['data_mib']:.0f} over the data); {theirs.split('_')[0]} "
                  f"{rt['seconds']:7.2f} s, peak RSS {rt['peak_mib']:6.0f} MiB (+{rt['peak_mib'] - rt['data_mib']:.0f}); "
                  f"time ratio {rt['seconds'] / ro['seconds']:.1f} x")
            diff = np.abs(so - st)
            if rel:
                diff = diff / np.maximum(np.abs(st), 1.0)
            ok &= agree(f"{what} scores, ours vs {theirs.split('_')[0]} ({'relative' if rel else 'absolute'})",
                        float(diff.max()), tol)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
