"""Builds the demo's context: real checkpoints (trained here, cached), Dumps of every split, OOD patches."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from repanalysis.demo import DemoContext
from repanalysis.errors import RepanalysisError


def ood_patches(n: int = 1000, seed: int = 0) -> np.ndarray:
    """Real out-of-distribution images for a digit model: 28x28 grayscale patches of scikit-image's photos.

    Each patch is brought to MNIST's pixel statistics (dark background: inverted when mostly bright, then
    rescaled to mean 0.13 and standard deviation 0.31 of the [0, 1] range). Raw photo patches are about 3.5x
    brighter than digits, and a ReLU network's logits grow with input scale (Hein et al., CVPR 2019), so raw
    patches get *higher* max logits than real digits (AUROC ~0.06 for a CE model): an intensity artefact,
    not the semantic shift an OOD test is about. Matched patches differ from digits only in content.
    """
    import skimage.data as sk
    from PIL import Image

    photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), sk.camera(), sk.coins(), sk.moon(),
              sk.page(), sk.text(), sk.brick(), sk.grass(), sk.gravel()]
    gray = [np.asarray(Image.fromarray(p).convert("L")) for p in photos]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 28, 28), dtype=np.uint8)
    which = rng.integers(0, len(gray), n)
    sizes = rng.integers(28, 112, n)
    for i in range(n):  # n crops of a few fixed photos: data preparation, not an analysis
        img, s = gray[which[i]], int(min(sizes[i], *gray[which[i]].shape))
        y = rng.integers(0, img.shape[0] - s + 1)
        x = rng.integers(0, img.shape[1] - s + 1)
        out[i] = np.asarray(Image.fromarray(img[y:y + s, x:x + s]).resize((28, 28), Image.BILINEAR))
    p = out.astype(np.float32) / 255
    flat = p.reshape(n, -1)
    bright = flat.mean(1) > 0.5
    p[bright] = 1 - p[bright]
    mean, std = flat.mean(1)[:, None, None], flat.std(1)[:, None, None] + 1e-6  # views: after the inversion
    return (np.clip((p - mean) / std * 0.31 + 0.13, 0, 1) * 255).round().astype(np.uint8)


def build_context(out: str | Path, *, epochs: int = 8, n_train: int = 4000, seed: int = 0,
                  device: str = "auto", log=print, losses=("ce", "ls", "maxsup"), alpha_schedule: str = "linear",
                  progress: bool = True) -> DemoContext:
    """Train (or reuse) the checkpoints, extract Dumps for train/test/OOD, and return the DemoContext.

    ``alpha_schedule``: "linear" (LS and MaxSup alpha both 0.1 -> 0.2 over training, the MaxSup paper's default)
    or "constant" (0.1). ``progress``: training bars (steps/s) on stderr when it is a terminal."""
    import repanalysis as ra
    from repanalysis.train import DIGIT_NAMES, make_demo_checkpoints
    from repanalysis.train.trainer import write_npz

    out = Path(out)
    start = time.perf_counter()
    log(f"checkpoints: training small CNNs on real MNIST digits ({n_train} train images, {epochs} epochs, "
        f"{alpha_schedule} LS / MaxSup alpha{' 0.1 -> 0.2' if alpha_schedule == 'linear' else ' 0.1'}) "
        f"or reusing {out / 'checkpoints'}")
    checkpoints, data = make_demo_checkpoints(out, losses=losses, epochs=epochs, n_train=n_train, seed=seed,
                                              alpha_schedule=alpha_schedule, log=log, progress=progress,
                                              save_every_epoch=True)    # for the dynamics step
    ood = out / "data" / f"ood_photo_patches_s{seed}.npz"      # named by its seed: a run with another seed makes its own
    if not ood.exists():
        write_npz(ood, ood_patches(seed=seed), np.zeros(1000, dtype=np.int64), DIGIT_NAMES)
    dumps: dict = {}
    ood_dumps: dict = {}
    for name, ckpt in checkpoints.items():
        try:
            lm = ra.load_model(ckpt)
        except RepanalysisError as err:       # a cached checkpoint cut short (a killed run, a full disk)
            raise type(err)(f"{err}; it is the demo's cached checkpoint: delete it and the demo trains it "
                            "again") from None
        dumps[name] = {}
        for split, path in list(data.items()) + [("ood", ood)]:
            target = out / "dumps" / f"{ckpt.stem}_{split}"      # reused when it is a Dump of this same run
            dump = ra.extract(lm, path, target, device=device, progress=False, overwrite=True, reuse=True,
                              batch_size=256, workers=0)
            dump.name = name
            if split == "ood":
                ood_dumps[name] = dump
            else:
                dumps[name][split] = dump
    log(f"checkpoints and Dumps ready in {time.perf_counter() - start:.1f}s")
    return DemoContext(out=out, checkpoints=checkpoints, dumps=dumps, data=data, class_names=list(DIGIT_NAMES),
                       ood_data=ood, ood_dumps=ood_dumps, device=device, log=log,
                       progress=progress)


def summary_rows(ctx: DemoContext) -> list[dict]:
    rows = []
    for name, splits in ctx.dumps.items():
        for split, dump in splits.items():
            acc = float((np.asarray(dump.logits).argmax(1) == np.asarray(dump.labels)).mean())
            rows.append({"model": name, "split": split, "N": dump.num_samples, "K": dump.num_classes,
                         "D": dump.feature_dim, "accuracy": acc})
    return rows
