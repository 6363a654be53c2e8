"""Images/s of extraction in one process against torchrun with several processes (gloo on the CPU, NCCL on GPUs).

Both sides run the command a user runs, as a fresh process (so imports, the model load and the rank-0 merge
are counted; startup is printed apart): ``repanalysis extract`` against ``torchrun --standalone
--nproc_per_node=P -m repanalysis extract`` on the same JPEG ImageFolder (real photos, random crops, the
ImageNet eval transform at 224 px), the same checkpoint (torchvision ResNet-18, random weights), batch size
and device. torchrun gives each process OMP_NUM_THREADS=1; the single process keeps torch's default (one thread
per core) and the default loader workers (cores - 1), the ranks theirs (their share of the cores - 1).
Also measured, in-process: the loader alone (read + PIL decode + resize/crop/normalise, no model) and the model
alone (forward on pre-made batches), which say what bounds the extraction. The two Dumps are compared
(``agree: ...``): the same images in the same order, logits equal up to the float rounding of different thread
counts.

    .venv/bin/python benchmarks/distributed.py [--images 512] [--nproc 2] [--batch-size 32] [--device auto]
    .venv/bin/python benchmarks/distributed.py --quick           # 16 images, batch 4 (seconds)
On a GPU machine: --device cuda, --precision bf16, and --decode device (nvJPEG) for the decode comparison.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import repanalysis as ra  # noqa: F401  (torchvision compatibility first)
import torch
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from extract_speed import make_imagefolder  # noqa: E402

REL_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}


def _command(work: Path, out: str, args) -> list[str]:
    return ["extract", "--checkpoint", str(work / "model.pth"), "--arch", args.arch, "--data", str(work / "data"),
            "--output", str(work / out), "--batch-size", str(args.batch_size), "--device", args.device,
            "--precision", args.precision, "--decode", args.decode, "--quiet", "--overwrite"]


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t


def _startup(env: dict) -> float:
    """Seconds a bare `repanalysis --version` takes: the interpreter and import cost every process pays."""
    return _timed([sys.executable, "-m", "repanalysis", "--version"], env)


def _parts(work: Path, args) -> tuple[float, float]:
    """Images/s of the loader alone (workers as extract's default) and of the model alone, in this process."""
    from torch.utils.data import DataLoader

    from repanalysis.data.datasets import open_dataset
    from repanalysis.extract.runner import default_workers
    from repanalysis.models.loading import load_model

    lm = load_model(work / "model.pth", arch=args.arch)
    ds = open_dataset(work / "data", transform=lm.transform)
    t = time.perf_counter()
    batches = [x for x, _, _ in DataLoader(ds, batch_size=args.batch_size, num_workers=default_workers())]
    load_ips = len(ds) / (time.perf_counter() - t)
    net = lm.model.eval().to(memory_format=torch.channels_last)
    t = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            net(x.contiguous(memory_format=torch.channels_last))
    return load_ips, len(ds) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--decode", default="pil", choices=["pil", "device"])
    p.add_argument("--quick", action="store_true", help="16 images, batch 4 (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.images, args.batch_size = 16, 4
    work = Path(tempfile.mkdtemp(prefix="distributed_bench_"))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    try:
        make_imagefolder(work / "data", args.images)
        torch.manual_seed(0)
        from repanalysis.models import registry

        torch.save(registry.create_model(args.arch, 1000).state_dict(), work / "model.pth")
        startup = _startup(env)
        one = _timed([sys.executable, "-m", "repanalysis", *_command(work, "one", args)], env)
        many = _timed([sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={args.nproc}", "-m", "repanalysis", *_command(work, "many", args)], env)
        load_ips, model_ips = _parts(work, args)
        a, b = ra.load_dump(work / "one"), ra.load_dump(work / "many")
        n = args.images
        print(f"{args.arch}, {n} JPEG images (224 px eval), batch {args.batch_size}, device {args.device}, "
              f"{args.precision}, decode {args.decode}, {os.cpu_count()} cores")
        print(f"process start + imports (each process pays it): {startup:.2f} s")
        print(f"1 process:            {n / one:7.1f} images/s ({one:.2f} s wall, "
              f"{n / max(1e-9, one - startup):.1f} images/s without the start)")
        print(f"{args.nproc} processes (torchrun): {n / many:7.1f} images/s ({many:.2f} s wall, "
              f"{n / max(1e-9, many - startup):.1f} images/s without the start)")
        print(f"ratio {args.nproc} processes / 1: {one / many:.2f}x")
        print(f"in this process: loader alone (read + PIL decode + transform) {load_ips:.1f} images/s, "
              f"model alone {model_ips:.1f} images/s")
        same = np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
        diff = float(np.abs(np.asarray(a.logits) - np.asarray(b.logits)).max()) if same else float("nan")
        tol = REL_TOLERANCE[args.precision] * max(1.0, float(np.abs(np.asarray(a.logits)).max()))
        ok = agree(f"logits of {n} images, 1 process vs {args.nproc} (same ids and labels: {same})", diff, tol)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
