"""CAMs per second: our batched pipeline against pytorch-grad-cam called one image at a time.

Same model (random weights are fine for speed), same images, same targets, in one run; prints both
timings, the ratio and the largest difference between the two sets of CAMs, as the line
``agree: CAMs ... max|diff| = ... <= tol`` (or DISAGREE, and the script exits 1).

    .venv/bin/python benchmarks/gradcam_speed.py                      # CPU: resnet18, 224 px, 64 images, batch 32
    .venv/bin/python benchmarks/gradcam_speed.py --arch resnet50 --images 256 --batch-size 64 --device cuda
    .venv/bin/python benchmarks/gradcam_speed.py --quick              # 4 images at 64 px, batch 2 (seconds)
"""
from __future__ import annotations

import argparse
import sys
import time

import repanalysis  # noqa: F401  (applies the torchvision import fix before pytorch_grad_cam)
import torch
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from repanalysis.analyze.cam import compute_cams
from _agree import agree  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


# CAMs are min-max normalised to [0, 1]; both sides compute them in float32 (the same gradients, weights and
# ReLU), so they differ by float32 rounding, amplified where an image's CAM spans a small range before scaling
TOLERANCE = 1e-4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_at_a_time(model, images, targets):
    """pytorch-grad-cam as its README uses it: one image, one ClassifierOutputTarget per call."""
    out = []
    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        for i in range(images.shape[0]):
            out.append(cam(input_tensor=images[i:i + 1], targets=[ClassifierOutputTarget(int(targets[i]))]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-baseline", action="store_true", help="only time our pipeline")
    parser.add_argument("--quick", action="store_true", help="4 images at 64 px, batch 2 (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.resolution, args.batch_size = 4, 64, 2
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(num_classes=1000).eval().to(device)
    images = torch.randn(args.images, 3, args.resolution, args.resolution)
    targets = torch.randint(0, 1000, (args.images,))
    print(f"{args.arch} at {args.resolution} px, {args.images} images, device {device}, "
          f"torch threads {torch.get_num_threads()}")

    compute_cams(model, images[:2], targets[:2], batch_size=2)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    ours = compute_cams(model, images, targets, batch_size=args.batch_size)
    _sync(device)
    t_ours = time.perf_counter() - t0
    print(f"ours (batched, batch {args.batch_size}):        {t_ours:8.2f} s  {args.images / t_ours:8.1f} CAMs/s")
    if args.skip_baseline:
        return
    one_at_a_time(model, images[:1], targets[:1])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    ref = one_at_a_time(model, images, targets)
    _sync(device)
    t_ref = time.perf_counter() - t0
    print(f"pytorch-grad-cam (one image at a time): {t_ref:8.2f} s  {args.images / t_ref:8.1f} CAMs/s")
    diff = (ours.cams - torch.from_numpy(__import__("numpy").concatenate(ref))).abs().max().item()
    print(f"speed-up: {t_ref / t_ours:.2f}x   max |CAM difference|: {diff:.2e}")
    if not agree(f"CAMs of {args.images} images, ours vs pytorch-grad-cam", diff, TOLERANCE):
        sys.exit(1)


if __name__ == "__main__":
    main()
