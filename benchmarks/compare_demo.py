"""`repanalysis compare` on the demo's three checkpoints, end to end, against the dozen single commands a user would
otherwise run for the same evidence, in the same run.

    .venv/bin/python benchmarks/compare_demo.py [--quick]

Inputs: the demo's CE / LS / MaxSup small CNNs (figures/demo/checkpoints, trained first when missing: not timed)
on the demo's real MNIST digits (test split = evaluation data, train split), with the box around each test digit's
ink for Grad-CAM (the first 512 digits). Timed, each in a fresh folder:

1. ``repanalysis compare --checkpoint x3 --data TEST --train-data TRAIN --boxes BOXES`` from nothing: it extracts six
   Dumps, runs calibration, logits, geometry (with UMAP), Grad-CAM, 1,000 paired bootstrap resamples, and writes the
   report (the issue's target: under 2 minutes on this machine);
2. the same command again, with its Dumps complete (nothing is extracted);
3. the single commands for the same figures and tables: ``extract`` x6, ``analyze-logits``, ``calibration``,
   ``separation``, ``collapse``, ``features``, ``embed``, ``gradcam`` (each a process of its own, as a user types
   them; they report no paired differences and write no report).
The ratio is (3) / (1). The agreement line compares the ECE of each model in compare's Table 1 with the one the
``calibration`` command wrote (the same function on the same Dumps: they must be equal). ``--quick``: one-epoch
checkpoints on 500 digits, no train data, 100 resamples, 32 Grad-CAM images, no UMAP, and of the single commands
only the extractions and ``calibration`` (the smoke run the tests make).
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

from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["CE", "LS", "MaxSup"]


def run(argv, cwd, device: bool = True) -> float:
    """Run ``repanalysis <argv>`` (on the CPU when the command takes ``--device``) as its own process; its wall
    time."""
    exe = Path(sys.executable).with_name("repanalysis")
    start = time.perf_counter()
    proc = subprocess.run([str(exe), *argv, *(["--device", "cpu"] if device else [])], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    if proc.returncode:
        sys.exit(f"repanalysis {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def _analyses(dumps, val, names, models, data, boxes, cam, cwd) -> float:
    """The single analysis commands after calibration (the full run only); their total wall time."""
    t = run(["analyze-logits", *val, *names, "--out", "logits"], cwd)
    t += run(["separation", *[a for n in NAMES for a in (dumps[n, "train"], dumps[n, "test"])],
              "--names", ",".join(n for n in NAMES for _ in (0, 1)), "--out", "separation"], cwd)
    t += run(["collapse", *[dumps[n, "train"] for n in NAMES], *names, "--out", "collapse"], cwd)
    t += run(["features", *[a for d in val for a in ("--dump", d)], *names, "--out", "features"], cwd)
    t += run(["embed", *val, *names, "--out", "embed"], cwd, device=False)
    t += run(["gradcam", *[a for c in models for a in ("--checkpoint", c)], *names, "--data", str(data["test"]),
              "--boxes", str(boxes), "--limit", str(cam), "--out", "gradcam", "--quiet"], cwd)
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import repanalysis  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args, work: Path) -> int:
    from repanalysis.demo.steps.report import digit_box_file
    from repanalysis.train import make_demo_checkpoints

    if args.quick:
        ckpts, data = make_demo_checkpoints(work / "demo", epochs=1, n_train=500, seed=0, progress=False)
        n_boot, cam, embed = 100, 32, ["--no-embed"]
    else:
        ckpts, data = make_demo_checkpoints(ROOT / "figures" / "demo", epochs=8, n_train=4000, seed=0, progress=False)
        n_boot, cam, embed = 1000, 512, []
    boxes = digit_box_file(data["test"], work, n=cam)
    models = [str(ckpts[n]) for n in NAMES]
    splits = ("test",) if args.quick else ("test", "train")
    train = [] if args.quick else ["--train-data", str(data["train"])]
    compare = ["compare", *[a for c in models for a in ("--checkpoint", c)], "--names", ",".join(NAMES),
               "--data", str(data["test"]), *train, "--boxes", str(boxes),
               "--cam-images", str(cam), "--bootstrap", str(n_boot), "--quiet", *embed, "--out", "cmp"]
    first = run(compare, work)
    second = run(compare, work)
    extracted = sorted((work / "cmp" / "dumps").iterdir())

    single = work / "single"
    single.mkdir()
    dumps = {}
    t_single = 0.0
    for name, ckpt in zip(NAMES, models):
        for split in splits:
            dumps[name, split] = str(single / f"{name}_{split}")
            t_single += run(["extract", "--checkpoint", ckpt, "--data", str(data[split]), "--output",
                             dumps[name, split], "--quiet", "--workers", "0"], single)
    val = [dumps[n, "test"] for n in NAMES]
    names = ["--names", ",".join(NAMES)]
    t_single += run(["calibration", *val, *names, "--bootstrap", str(n_boot), "--out", "calibration", "--quiet"],
                    single)
    if not args.quick:
        t_single += _analyses(dumps, val, names, models, data, boxes, cam, single)
    print(f"compare, first run (extracts {len(extracted)} Dumps):  {first:7.1f} s")
    print(f"compare, second run (Dumps complete):    {second:7.1f} s")
    what = "extract + calibration only" if args.quick else "all"
    print(f"the single commands ({what}):            {t_single:7.1f} s   "
          f"ratio single / compare = {t_single / first:.2f}x")
    table = {r["model"]: r["ece"] for r in json.loads((work / "cmp" / "tables" / "table1_calibration.json")
                                                      .read_text())["rows"]}
    single_ece = {m["name"]: m["ece"] for m in json.loads((single / "calibration" / "calibration.json")
                                                          .read_text())["models"]}
    diff = max(abs(table[n] - single_ece[n]) for n in NAMES)
    return 0 if agree("ECE in compare's Table 1 vs `repanalysis calibration`", diff, 1e-12) else 1


if __name__ == "__main__":
    sys.exit(main())
