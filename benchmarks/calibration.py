"""ECE, adaptive ECE and classwise ECE: repanalysis against torchmetrics and netcal, in the same run.

    .venv/bin/python benchmarks/calibration.py [--repeats 7] [--threads N] [--quick]

Inputs: float32 logits 200,000 x 100 and 50,000 x 1,000 (seeded; labels drawn from the softmax, so the
model is calibrated up to noise, then the logits sharpened by 1.5 to make it over-confident).
What a user would otherwise run, each timed from logits to the number:

- ECE: torchmetrics ``multiclass_calibration_error(logits, y, K, n_bins=15)`` (softmax inside); netcal
  ``ECE(bins=15).measure(softmax(logits), y)`` (netcal wants probabilities: the softmax is timed with it).
  Conventions: ours (lo, hi]; torchmetrics [lo, hi) with 1.0 in its own bin; netcal [lo, hi), last bin
  closed. The values agree up to float rounding of the probabilities (each takes float32 softmax values;
  ours are exp(z) / sum exp(z), theirs torch.softmax) when no confidence lies exactly on an edge j/15,
  which the script checks; |diff| is printed.
- Adaptive ECE: the reference ``AdaptiveECELoss`` loop (Mukhoti et al. code used by MbLS/ACLS/FedLaS), which
  ours reproduces; netcal ``ECE(bins=15, equal_intervals=False)`` uses np.quantile edges with the outer
  edges at 0 and 1, a different rule (its value is printed, not compared).
- Classwise ECE: torchmetrics ``binary_calibration_error`` on p_k vs 1[y = k] for every class k, averaged;
  netcal ``ECE(bins=15, detection=True)`` per class (timed on the first 100 classes and scaled to K).
ECE and AECE implementations are warmed up once, then timed round-robin ``--repeats`` times so that a load
spike on a shared machine hits all of them alike; the minimum and the median are printed, and the ratio is
(reference minimum) / (our minimum). The classwise loops run once (they take seconds).
Each value compared prints ``agree: <what> max|diff| = ... <= 1e-05`` (or DISAGREE, and the script exits 1);
``--quick`` (10x fewer rows, one repeat) is the smoke run the tests make.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import repanalysis  # noqa: F401  (compat fix before torchmetrics imports torchvision)
import torch
from repanalysis.analyze import calibration as C
from _agree import agree as _agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


TOLERANCE = 1e-5   # every side takes float32 softmax probabilities: they differ by float32 rounding (~1e-7)


def agree(what: str, diff: float, tol: float = TOLERANCE) -> bool:
    return _agree(what, diff, tol)


def timed(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), value


def interleaved(fns, repeats):
    """Warm each function up once, then time them round-robin so a load spike hits all of them alike.

    Returns [(min s, median s, value)] in the order given."""
    values = [fn() for fn in fns]
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [(min(t), statistics.median(t), v) for t, v in zip(times, values)]


def make_logits(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, k, generator=g) * 2.5
    y = torch.multinomial(torch.softmax(base, 1), 1, generator=g).squeeze(1)
    return (base * 1.5).float().contiguous(), y


def reference_adaptive_ece(logits, labels, n_bins=15):
    """AdaptiveECELoss.forward from the reference code (float32 softmax, numpy edges, loop over bins)."""
    import torch.nn.functional as F

    softmaxes = F.softmax(logits, dim=1)
    confidences, predictions = torch.max(softmaxes, 1)
    accuracies = predictions.eq(labels)
    x = confidences.cpu().detach()
    npt = len(x)
    edges = np.interp(np.linspace(0, npt, n_bins + 1), np.arange(npt), np.sort(x))
    _, bin_boundaries = np.histogram(x, edges)
    ece = torch.zeros(1)
    for lo, hi in zip(bin_boundaries[:-1], bin_boundaries[1:]):
        in_bin = confidences.gt(lo.item()) * confidences.le(hi.item())
        prop = in_bin.float().mean()
        if prop.item() > 0:
            ece += torch.abs(confidences[in_bin].mean() - accuracies[in_bin].float().mean()) * prop
    return float(ece)


def on_edge(conf, n_bins=15):
    s = np.asarray(conf, dtype=np.float64) * n_bins
    return int(np.isclose(s, np.round(s), rtol=0, atol=1e-12).sum())


def row(task, impl, t_min, t_med, value, ours_min=None, note=""):
    ratio = "" if ours_min is None else f"{t_min / ours_min:7.1f}x"
    print(f"{task:14s} {impl:34s} {1000 * t_min:10.1f} {1000 * t_med:10.1f}  {value:.8f}  {ratio:>8s}  {note}",
          flush=True)


def bench(n, k, repeats, netcal_classes=100) -> bool:
    """Time and compare the three metrics on n x k logits; False when a reference disagrees with ours."""
    from netcal.metrics import ECE
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    z, y = make_logits(n, k)
    y_np = y.numpy()
    print(f"\n== {n:,} x {k:,} float32 logits, 15 bins ==")
    print(f"{'metric':14s} {'implementation':34s} {'min ms':>10s} {'median ms':>10s}  {'value':10s}  "
          f"{'ref/ours':>8s}")
    conf = torch.softmax(z.double(), 1).amax(1).numpy()
    edges = on_edge(conf)
    print(f"confidences exactly on an edge j/15: {edges}")
    size, ok = f"{n:,} x {k:,}", True

    # --- ECE
    (o_min, o_med, o_val), (t_min, t_med, t_val), (n_min, n_med, n_val) = interleaved([
        lambda: C.expected_calibration_error(z, y),
        lambda: float(multiclass_calibration_error(z, y, k, n_bins=15)),
        lambda: ECE(bins=15).measure(torch.softmax(z, 1).numpy(), y_np)], repeats)
    row("ECE", "repanalysis", o_min, o_med, o_val)
    row("ECE", "torchmetrics multiclass", t_min, t_med, t_val, o_min, f"|diff| {abs(t_val - o_val):.1e}")
    row("ECE", "netcal ECE (+ softmax)", n_min, n_med, n_val, o_min, f"|diff| {abs(n_val - o_val):.1e}")
    if edges:     # the bin conventions differ there: the values may legitimately differ
        print(f"ECE not compared: {edges} confidences lie on a bin edge, where the conventions differ")
    else:
        ok &= agree(f"ECE {size}, ours vs torchmetrics and netcal", max(abs(t_val - o_val), abs(n_val - o_val)))
    best = min(t_min, n_min)
    print(f"ECE speed-up over the faster reference ({'torchmetrics' if t_min <= n_min else 'netcal'}): "
          f"{best / o_min:.1f}x")

    # --- adaptive ECE
    (o_min, o_med, o_val), (r_min, r_med, r_val), (n_min, n_med, n_val) = interleaved([
        lambda: C.adaptive_ece(z, y),
        lambda: reference_adaptive_ece(z, y),
        lambda: ECE(bins=15, equal_intervals=False).measure(torch.softmax(z, 1).numpy(), y_np)], repeats)
    row("AECE", "repanalysis (reference rule)", o_min, o_med, o_val)
    row("AECE", "reference AdaptiveECELoss loop", r_min, r_med, r_val, o_min, f"|diff| {abs(r_val - o_val):.1e}")
    row("AECE", "netcal ECE equal_intervals=False", n_min, n_med, n_val, o_min, "different edge rule")
    ok &= agree(f"adaptive ECE {size}, ours vs the reference AdaptiveECELoss loop", abs(r_val - o_val))

    # --- classwise ECE
    o_min, o_med, (o_val, per) = timed(lambda: C.classwise_ece(z, y, per_class=True), repeats)
    row("classwise ECE", "repanalysis", o_min, o_med, o_val)

    def tm_classwise():
        p = torch.softmax(z, 1)
        return float(np.mean([float(binary_calibration_error(p[:, c], (y == c).long(), n_bins=15))
                              for c in range(k)]))

    t_min, t_med, t_val = timed(tm_classwise, 1)
    row("classwise ECE", "torchmetrics binary, loop over K", t_min, t_med, t_val, o_min,
        f"|diff| {abs(t_val - o_val):.1e}")
    m = min(netcal_classes, k)

    def nc_classwise():
        p = torch.softmax(z, 1).numpy()
        return float(np.mean([ECE(bins=15, detection=True).measure(p[:, c], (y_np == c).astype(np.int64))
                              for c in range(m)]))

    n_min, n_med, n_val = timed(nc_classwise, 1)
    scale = k / m
    ours_sub = float(per[:m].mean())
    row("classwise ECE", f"netcal detection, {m} classes x{scale:g}", n_min * scale, n_med * scale, n_val, o_min,
        f"mean over {m} classes, ours {ours_sub:.8f}, |diff| {abs(n_val - ours_sub):.1e}")
    ok &= agree(f"classwise ECE {size}, ours vs torchmetrics (all classes) and netcal (first {m})",
                max(abs(t_val - o_val), abs(n_val - ours_sub)))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds of each ECE / AECE implementation (default 7; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="10x smaller inputs, one repeat (a smoke run)")
    args = ap.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 7
    if args.threads:
        torch.set_num_threads(args.threads)
    import netcal
    import torchmetrics

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchmetrics {torchmetrics.__version__}, "
          f"netcal {netcal.__version__}")
    sizes = [(200_000, 100), (50_000, 1_000)]
    if args.quick:
        sizes = [(n // 10, k) for n, k in sizes]
    results = [bench(n, k, args.repeats) for n, k in sizes]
    if not all(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
