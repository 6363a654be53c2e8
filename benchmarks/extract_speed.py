"""Images/s of repanalysis extraction against the plain loop the MaxSup logit tool uses, in one run.

Reference loop (as the seed tool does it): fp32 model, a standard DataLoader over an ImageFolder, torch.no_grad,
``.cpu()`` per batch appended to lists, torch.cat at the end, torch.save of {'logits', 'labels'}.
Ours: ``repanalysis.extract`` writing a Dump (logits + penultimate features + labels + ids) through memory maps.
Same model (torchvision ResNet), same JPEG images, same transform, batch size and worker count.

    python benchmarks/extract_speed.py [--arch resnet18] [--images 192] [--batch-size 32] [--device auto]
    python benchmarks/extract_speed.py --quick      # 8 images, batch 4, one run of each (seconds)
The logits of both are compared: ``agree: logits ... max|diff| = ... <= tol`` (or DISAGREE, exit 1).
On a GPU machine, add --precision bf16 for ours (channels_last is automatic for convolutional models,
on CPU and GPU alike; its logits then differ from the NCHW reference by float32 rounding, ~1e-6).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import repanalysis as ra  # noqa: F401  (torchvision compatibility first)
import torch
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


# largest |logit difference| allowed, relative to the largest |logit| (at least 1): fp32 differs from the NCHW
# reference by float32 rounding only (~1e-6); half precisions by their 8 (bf16) or 11 (fp16) bits of mantissa
REL_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2}


def make_imagefolder(root: Path, n: int, seed: int = 0) -> None:
    """n real-photo JPEGs (random crops of scikit-image photos, 2 classes) in an ImageFolder tree."""
    import skimage.data as sk
    from PIL import Image

    photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket()]
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[y:y + s, x:x + s]).resize((320, 320)).save(folder / f"{i:05d}.jpg", quality=90)


def reference_loop(model, root, transform, batch_size, workers, device):
    """The seed tool's way: ImageFolder + DataLoader, fp32, .cpu() per batch, cat, torch.save."""
    from torchvision.datasets import ImageFolder
    from torch.utils.data import DataLoader

    ds = ImageFolder(str(root), transform=transform)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    all_logits, all_labels = [], []
    model.eval().to(device)
    with torch.no_grad():
        for x, y in loader:
            all_logits.append(model(x.to(device)).cpu())
            all_labels.append(y)
    out = {"logits": torch.cat(all_logits), "labels": torch.cat(all_labels)}
    torch.save(out, root.parent / "reference.pt")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best is reported")
    p.add_argument("--quick", action="store_true", help="8 images, batch 4, one run of each (a smoke run)")
    args = p.parse_args()
    if args.quick:
        args.images, args.batch_size, args.repeats = 8, 4, 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    work = Path(tempfile.mkdtemp(prefix="extract_bench_"))
    try:
        make_imagefolder(work / "data", args.images)
        torch.manual_seed(0)
        from repanalysis.models import registry
        from repanalysis.models.loading import load_model

        torch.save(registry.create_model(args.arch, 1000).state_dict(), work / "model.pth")
        lm = load_model(work / "model.pth", arch=args.arch)
        transform = lm.transform
        ref_times, our_times = [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            ref = reference_loop(lm.model, work / "data", transform, args.batch_size, args.workers, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ref_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            dump = ra.extract(lm, work / "data", work / "dump", batch_size=args.batch_size, device=str(device),
                              precision=args.precision, workers=args.workers, progress=False, overwrite=True)
            our_times.append(time.perf_counter() - t)
        n = args.images
        ref_ips, our_ips = n / min(ref_times), n / min(our_times)
        ref_logits = ref["logits"].numpy()
        diff = float(np.abs(np.asarray(dump.logits, dtype=np.float32) - ref_logits).max())
        same_labels = np.array_equal(np.asarray(dump.labels), ref["labels"].numpy())
        print(f"device {device}, {args.arch}, {n} JPEG images, batch {args.batch_size}, workers {args.workers}, "
              f"torch threads {torch.get_num_threads()}, ours in {args.precision}")
        print(f"reference loop (logits only, fp32): {ref_ips:8.1f} images/s  (best of {args.repeats}: {min(ref_times):.2f}s)")
        print(f"repanalysis extract (logits+features): {our_ips:8.1f} images/s  (best of {args.repeats}: {min(our_times):.2f}s)")
        print(f"ratio ours/reference: {our_ips / ref_ips:.2f}x   max |logit difference|: {diff:.2e}")
        tol = REL_TOLERANCE[args.precision] * max(1.0, float(np.abs(ref_logits).max()))
        ok = agree(f"logits of {n} images, ours ({args.precision}) vs the reference loop (fp32)"
                   + ("" if same_labels else " (LABELS DIFFER)"), diff if same_labels else float("nan"), tol)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
