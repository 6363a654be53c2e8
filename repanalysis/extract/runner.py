"""The batched forward pass: model + data set -> Dump, incrementally, resumable, bounded memory.

``extract`` runs under inference mode, on CUDA when present (``device="auto"``), in fp32 by default or
bf16/fp16 autocast, channels_last for convolutional models (CPU and CUDA), with DataLoader workers and pinned
memory; rows go straight into the Dump's memory-mapped arrays and ``meta.json`` records progress after
each flushed group of batches, so a killed run resumes when re-run with the same arguments.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from repanalysis.arrays import check_number, pick_device
from repanalysis.errors import DataError, DumpError, RepanalysisError
from repanalysis.dump.shards import parse_shard, shard_rows
from repanalysis.extract.store import Dump, DumpWriter, check_pt_output, is_complete_run, load_dump, save_seed_pt
from repanalysis.models.features import FeatureTap
from repanalysis.paths import as_path

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FEATURE_DTYPES = ("float32", "float16")   # what a Dump's features.npy can hold (numpy has no bfloat16)


def _feature_dtype(value) -> str:
    """'float32' / 'float16' (or an equivalent numpy dtype) -> its name; DataError otherwise (an integer dtype
    would truncate the features, an unknown one is not a dtype at all)."""
    try:
        name = np.dtype(value).name if isinstance(value, (str, np.dtype, type)) else None
    except TypeError:
        name = None
    if name not in FEATURE_DTYPES:
        raise DataError(f"feature_dtype {value!r} is not supported; expected one of {', '.join(FEATURE_DTYPES)}")
    return name


def _model_device(model) -> torch.device | None:
    """Where the model's first parameter (or buffer) lives; None for a model that holds neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


@contextlib.contextmanager
def _writing(path):
    """An output that cannot be written (read-only folder, a path under a file, a full disk) -> one DumpError."""
    try:
        yield
    except OSError as exc:
        reason = "disk full; free space and re-run to resume" if exc.errno == errno.ENOSPC else \
            (exc.strerror or str(exc))
        if exc.filename and Path(os.fsdecode(exc.filename)) != Path(path):
            reason += f" ({os.fsdecode(exc.filename)})"
        raise DumpError(f"cannot write {path}: {reason}; expected a path that can be written") from None


# 2: the data set's fingerprint covers the images' content (earlier Dumps record none and do not resume)
_REUSED = "a complete Dump of this same run"     # the note of a reused Dump (extract_cached tells it apart)
FINGERPRINT_SCHEME = 2


def _fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def extract(model, data, output: str | os.PathLike, *, arch: str | None = None, features: bool | None = None,
            feature_layer: str | None = None, batch_size: int = 128, device: str = "auto",
            precision: str = "fp32", workers: int | None = None, channels_last: bool | None = None,
            overwrite: bool = False, skip_bad: bool = False, layout: str = "auto", split: str | None = None,
            class_order: str | os.PathLike | None = None, labels_file: str | os.PathLike | None = None,
            synsets_file: str | os.PathLike | None = None, transform=None, feature_dtype: str = "float32",
            trust: bool = False, progress: bool = True, name: str | None = None, log=None,
            max_batches: int | None = None, reuse: bool = False, strict: bool = False,
            classifier: str | None = None, shard: tuple[int, int] | str | None = None, decode: str = "pil") -> Dump:
    """Extract logits (and penultimate features) of ``model`` on ``data`` into ``output``.

    model: a LoadedModel, a checkpoint path (loaded with ``arch``/``trust``; also a folder or ``"hf-hub:..."`` in
    timm's saved layout, see ``load_model``) or an in-memory ``torch.nn.Module`` (as ``models.loading.from_module``
    reads it: architecture recognised or ``arch``, sha256 of its state_dict, no checkpoint path; the module is
    handed back on its own device, memory format and train/eval mode). classifier: the name of the final
    nn.Linear ('head.fc') whose input is the penultimate feature, when the one found (timm's get_classifier(),
    else the last nn.Linear) is not it. data: a data set path (any layout of ``open_dataset``), an ImageDataset,
    a map-style ``torch.utils.data.Dataset`` of ``(image tensor [C, H, W], int label)`` items, or a DataLoader
    over one yielding ``(images [B, C, H, W], labels [B])`` in order (not shuffled; its own batch size and workers
    apply), see ``data.torch_data``; such data applies its own preprocessing, and the Dump's meta records
    ``transform`` only when one is given. output: a Dump directory, or a ``.pt`` path for
    the seed format ``{'logits', 'labels'}`` (built through a resumable ``<output>.partial`` Dump).
    features: store penultimate features (default: yes for a Dump folder; a ``.pt`` output cannot hold them,
    and ``features=True`` with one raises). A model that carries class names, run on an ImageFolder whose
    folders are named after those classes, labels each folder by the model's index of its name.
    transform: an EvalTransform overriding the model's; a data set path needs one (the model's own, or this) when
    the model is an nn.Module of no known architecture. Returns the complete Dump.
    strict: refuse a flat ImageNet-val folder that holds only some of the images its labels file lists (by
    default the images present are used, with one warning giving the counts; the Dump's meta records them).
    device: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"; a LoadedModel given here is moved there for
    the run and handed back on its own device (and memory format) on every way out.
    feature_dtype: "float32" or "float16" (the features' dtype in the Dump).
    max_batches: stop after this many batches, leaving an incomplete, resumable Dump (for tests).
    shard: ``(i, n)`` or ``"i/n"``: extract only shard i of n, a contiguous range of whole batches of the data
    set's order (``dump.shards.shard_rows``), into a complete Dump of its own whose meta records the shard and
    the run it belongs to; :func:`repanalysis.extract.merge.merge_dumps` joins the n shards into the Dump a
    single run gives. Each shard resumes like any extraction.
    decode: "pil" (default: the loader workers decode and transform with PIL) or "device": the workers only read
    the files' bytes and JPEGs are decoded in batches on the extraction device (nvJPEG on a GPU) and resized,
    cropped and normalised there (:mod:`repanalysis.data.device_decode`; image-file data sets with an
    EvalTransform, where torchvision's decoders load). Its pixels differ from PIL's by rounding, so it is a
    different run (recorded as ``decode: device``).
    reuse: a complete Dump of this same run (same checkpoint, data, split, transform, precision, ...) already at
    the output folder is returned as it is instead of refused or, with ``overwrite``, extracted again (a cache);
    a Dump of another run there is still replaced only with ``overwrite``.
    Every option is checked (DataError) before anything is loaded or written; an output that cannot be written
    raises DumpError "cannot write <output>: <reason>" and leaves nothing behind.
    """
    from repanalysis.data.datasets import label_for_model, open_dataset
    from repanalysis.data.torch_data import is_torch_data, wrap_torch_data
    from repanalysis.models.loading import LoadedModel, from_module, load_model
    from repanalysis.models.hub import is_hub_spec

    from repanalysis.data.device_decode import DECODERS, check_device_decoding

    if decode not in DECODERS:
        raise DataError(f"unknown decode {decode!r}; expected one of {', '.join(DECODERS)}")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise DataError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    # every option is checked before anything is loaded or written
    output = as_path(output, "output")
    in_memory = isinstance(model, (LoadedModel, torch.nn.Module))     # the caller's: handed back as it came
    if not in_memory and not is_hub_spec(model):
        model = as_path(model, "checkpoint")
    if not hasattr(data, "fingerprint") and not is_torch_data(data):
        data = as_path(data, "data set")
    batch_size = check_number(batch_size, "batch_size", integer=True, minimum=1)
    if workers is not None:
        workers = check_number(workers, "workers", integer=True, minimum=0)
    if max_batches is not None:
        max_batches = check_number(max_batches, "max_batches", integer=True, minimum=1)
    feature_dtype = _feature_dtype(feature_dtype)
    dev = pick_device(device)
    seed_pt = output.suffix == ".pt"
    if shard is not None:
        shard = parse_shard(shard)
        if seed_pt:
            raise DumpError(f"output {output} is a .pt file, but a shard is a Dump folder that merge-dumps joins; "
                            "give a folder as the output of each shard")
    if seed_pt and features:
        raise DumpError(f"output {output} is a .pt file, which holds only logits and labels, but features were "
                        "asked for; give a Dump folder as the output to keep the features, or use `repanalysis "
                        f"logits --output {output.name}` for logits only")
    want_features = not seed_pt if features is None else bool(features)   # False for a .pt (checked above)
    if seed_pt:
        check_pt_output(output)
    if seed_pt and output.exists() and not overwrite:
        raise DumpError(f"output {output} already exists; pass --overwrite to replace it")
    if isinstance(model, LoadedModel):
        lm = model
    elif isinstance(model, torch.nn.Module):
        lm = from_module(model, arch=arch)
    else:
        lm = load_model(model, arch, trust=trust, device="cpu", log=log)
    if classifier is not None:
        lm = lm.with_classifier(classifier)
    torch_data = is_torch_data(data)
    transform = transform or (None if torch_data else lm.transform)   # torch data applies its own
    if transform is None and hasattr(data, "fingerprint"):               # an ImageDataset: its own
        own = getattr(data, "transform", None)
        transform = own if hasattr(own, "to_dict") else None
    if transform is None and isinstance(data, Path):
        raise DataError(f"data {data} is read from files, which needs an eval transform, but {lm.arch} is no known "
                        "architecture; pass transform=EvalTransform(resolution=..., mean=..., std=...) "
                        "(repanalysis.data.EvalTransform), or arch=")
    if torch_data:
        dataset = wrap_torch_data(data)
    elif hasattr(data, "fingerprint"):
        dataset = data
    else:
        dataset = open_dataset(data, layout=layout, transform=transform, split=split, class_order=class_order,
                               skip_bad=skip_bad, labels_file=labels_file, synsets_file=synsets_file,
                               strict=strict)
        _check_split(dataset, data, split)
    if class_order is None and not torch_data:      # WordNet-id folders, or folders named after the model's classes
        dataset = label_for_model(dataset, lm.num_classes, lm.class_names, log=log)
    n = len(dataset)
    if n == 0:
        raise RepanalysisError(f"data set {data} has no samples")
    if decode == "device":
        check_device_decoding(dataset, getattr(dataset, "transform", None))
    rows = (0, n)
    if shard is not None:
        if hasattr(dataset, "batches"):
            raise DataError("shard= needs a data set or a map-style Dataset; a DataLoader yields its own batches, "
                            "which cannot be shared out: pass its Dataset instead")
        rows = shard_rows(*shard, n, batch_size)
        if rows[0] == rows[1]:
            raise DataError(f"shard {shard[0]}/{shard[1]} holds no rows: {n} samples make {-(-n // batch_size)} "
                            f"batches of {batch_size}; expected at most that many shards (or a smaller batch size)")
    if dataset.num_classes and lm.num_classes and dataset.num_classes > lm.num_classes:
        what = (f"the class order ({dataset.num_classes} entries) lists more classes" if class_order is not None
                else f"the data set has {dataset.num_classes} classes")
        raise RepanalysisError(f"{what} but the model outputs {lm.num_classes}; expected the model's classes")
    layer = feature_layer or lm.classifier_name
    if want_features and layer is None:
        if isinstance(model, torch.nn.Module):
            raise DataError(f"cannot find the final linear layer of {type(model).__name__} (it has no nn.Linear) to "
                            "read penultimate features; pass classifier='<its name>' (or feature_layer=NAME, or "
                            "features=False)")
        raise RepanalysisError("cannot find the model's final linear layer to read penultimate features; "
                               "pass --feature-layer NAME")
    fingerprint = _fingerprint({"sha": lm.sha256, **({"ema": True} if lm.ema else {}), "arch": lm.arch,
                                "data": dataset.fingerprint(),
                                "transform": transform.to_dict() if transform else None, "features": want_features,
                                "layer": feature_layer, "precision": precision, "feature_dtype": feature_dtype,
                                **({"decode": decode} if decode != "pil" else {})})
    run_fingerprint = fingerprint
    if shard is not None:           # a shard is its own run (resumed on its own), of the whole run ``run``
        fingerprint = _fingerprint({"run": run_fingerprint, "rows": list(rows)})
    n_rows = rows[1] - rows[0]
    if reuse and not seed_pt and is_complete_run(output, fingerprint, n_rows):
        if log:
            log(f"using {output}: {_REUSED}")
        return load_dump(output, name=name)
    # The caller's model goes back to its own device on every way out (one loaded here from a path stays put).
    home = _model_device(lm.model) if in_memory else None
    net = lm.model
    modes = [(m, m.training) for m in net.modules()]      # eval() for the run, the caller's modes back after
    # channels_last (NHWC) suits cuDNN and oneDNN alike: measured on 2 CPU cores, batch 32 at 224 px, it runs
    # ResNet-18 1.3x, EfficientNet-B0 1.5x and MobileNetV2 1.6x faster. Transformers gain nothing.
    # Switched before the probe forward (measured: 1.22x vs 1.14x of the reference when switched only for
    # the batched pass) and back on every way out, so the caller's model keeps its own memory format.
    use_cl = channels_last if channels_last is not None else lm.family not in ("vit", "deit")
    try:
        net.to(dev).eval()
        if use_cl:
            net.to(memory_format=torch.channels_last)
        # Probe one sample for the feature width (and to fail early on a model/data mismatch).
        x0 = dataset[0][0].unsqueeze(0).to(dev)
        with torch.inference_mode(), _autocast(dev, precision):
            try:
                if want_features:
                    with FeatureTap(net, layer, mode="input" if feature_layer is None else "output") as tap:
                        z0 = net(x0)
                    if tap.value is None:
                        raise RepanalysisError(f"layer {layer!r} did not run in the model's forward pass, so it "
                                               "gives no features; expected its final linear layer: pass "
                                               "classifier='<its name>' (or feature_layer=NAME)")
                    d = tap.value.shape[1]
                else:
                    z0 = net(x0)
            except RuntimeError as exc:
                raise RepanalysisError(f"the model cannot run on this data (input {tuple(x0.shape[1:])}): "
                                       f"{_cause(exc)[:200]}") from None
        k = z0.shape[1]
        specs = {"logits": ((k,), np.float32), "labels": ((), np.int64), "ids": ((), np.int64)}
        if want_features:
            specs["features"] = ((d,), np.dtype(feature_dtype))
        static = {}
        weights = lm.classifier_weights() if feature_layer is None else None
        if want_features and weights is not None:
            static = {"classifier_weight": weights[0], "classifier_bias": weights[1]}
        described = dataset.describe()
        meta = {"name": name or lm.name or (lm.checkpoint.stem if lm.checkpoint else lm.arch),
                "checkpoint": {"path": str(lm.checkpoint.resolve()) if lm.checkpoint else None,
                               "sha256": lm.sha256, "ema": lm.ema},
                "arch": lm.arch, "family": lm.family, "num_classes": int(k),
                "feature_layer": layer if want_features else None,
                "dataset": described, "split": described.get("split"),
                "transform": transform.to_dict() if transform else None,
                "class_names": dataset.class_names or lm.class_names, "wnids": getattr(dataset, "wnids", None),
                "precision": precision, "device": str(dev), "load_notes": lm.notes, "fingerprint": fingerprint,
                "fingerprint_scheme": FINGERPRINT_SCHEME,
                "skipped": list(getattr(dataset, "skipped", []))}
        if decode != "pil":
            meta["decode"] = decode
        if shard is not None:
            meta["shard"] = {"index": shard[0], "count": shard[1], "start": rows[0], "stop": rows[1], "total": n,
                             "run": run_fingerprint, "batch_size": batch_size}
        target = output.with_name(output.name + ".partial") if seed_pt else output
        if seed_pt and is_complete_run(target, fingerprint, n):
            # the run finished but its .pt could not be written (a full disk): write it now
            return _finish_seed_pt(target, output, overwrite)
        with _writing(output):
            writer = DumpWriter(target, n_rows, specs, meta, overwrite=overwrite, static_arrays=static,
                                sample_names=list(dataset.samples), for_file=output if seed_pt else None,
                                resume=shard is not None)
        if writer.done and log:
            log(f"resuming {output if seed_pt else writer.path} at sample {writer.done} of {n_rows}")
        elif writer.path != writer.target and log:
            log(f"building the new Dump in {writer.path}; {target} is replaced once it is complete")
        try:
            _run(net, dataset, writer, dev, precision, batch_size, workers, use_cl,
                 layer if want_features else None, feature_layer is None, progress, max_batches, rows[0], decode)
        except BaseException:
            writer.discard()  # a run that failed before its first row leaves nothing behind
            raise
        if writer.done < n_rows:
            return load_dump(writer.path, allow_incomplete=True)
        bad = count_nonfinite(writer._arrays["logits"])
        with _writing(output):
            writer.finalize({"nonfinite_logit_rows": bad})
        if bad:
            warnings.warn(f"{bad} of {n_rows} samples have NaN or inf logits; analyses will exclude them", RuntimeWarning,
                          stacklevel=2)
        if seed_pt:
            return _finish_seed_pt(target, output, overwrite)
        return load_dump(target)
    finally:
        if use_cl:
            net.to(memory_format=torch.contiguous_format)
        if home is not None and home != dev:
            net.to(home)
        for module, training in modes:
            module.training = training


def extract_cached(model, data, output: str | os.PathLike, *, log=None, **kwargs) -> tuple[Dump, bool]:
    """:func:`extract` as a cache (``reuse=True, overwrite=True``): a complete Dump of the same run at ``output`` is
    returned as it is, an interrupted one resumed, a Dump of another run there replaced. Returns the Dump and
    whether it was reused; ``log`` gets extract's other notes (resuming, labelling, ...)."""
    reused = []

    def note(message: str) -> None:
        if message.endswith(_REUSED):
            reused.append(message)
        elif log:
            log(message)

    dump = extract(model, data, output, reuse=True, overwrite=True, log=note, **kwargs)
    return dump, bool(reused)


def _cause(exc: RuntimeError) -> str:
    """The line of a model's RuntimeError that says what went wrong: its first line (a CUDA error ends with a
    hint to compile with device asserts). A TorchScript error opens with "The following operation failed in
    the TorchScript interpreter." and quotes, after its traceback, the original error from its last
    ``SomeError: `` line on: the first line of that."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if "TorchScript interpreter" in lines[0]:
        starts = [i for i, ln in enumerate(lines) if re.match(r"^[\w.]*Error: ", ln)]
        if starts:
            return lines[starts[-1]].partition(": ")[2]
    return lines[0]


def _finish_seed_pt(partial: Path, output: Path, overwrite: bool) -> Dump:
    """The seed ``.pt`` written from the complete ``partial`` Dump, which is then removed."""
    with _writing(output):
        dump = save_seed_pt(load_dump(partial), output, overwrite=overwrite)
    shutil.rmtree(partial)
    return dump


def _check_split(dataset, data, split) -> None:
    """A split given with a single .npz file, which has none, would be ignored yet recorded in the Dump's
    meta: DataError instead, unless the file's name has the split as one of its words (``mnist_test_n4000``
    is the test split). Folders are left alone: a folder of ``<split>.npz`` files or split sub-folders is
    entered at the split, and a flat image folder takes the split it is given (config, a Dump's record)."""
    if split is None or dataset.layout != "npz" or not Path(data).expanduser().is_file():
        return
    root = Path(dataset.root)
    words = re.split(r"[^0-9a-z]+", root.stem.casefold())
    if str(split).casefold() not in (*words, root.stem.casefold()):
        raise DataError(f"split {split!r} was given but {dataset.root} is a single data set with no splits; "
                        "expected no split, or a folder of <split>.npz files or of split sub-folders")


class _autocast:
    def __init__(self, dev: torch.device, precision: str):
        dtype = PRECISIONS[precision]
        self.ctx = torch.autocast(device_type=dev.type, dtype=dtype) if dtype is not None else None

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _run(net, dataset, writer: DumpWriter, dev, precision, batch_size, workers, channels_last, layer,
         layer_input, progress, max_batches, offset: int = 0, decode: str = "pil") -> None:
    """Rows ``offset + writer.done`` to ``offset + writer.num_samples`` of ``dataset`` into the writer's rows
    ``writer.done`` on (``offset``: a shard's first row in the data set's order)."""
    from torch.utils.data import DataLoader, Subset

    n = writer.num_samples
    start = writer.done
    if start >= n:
        return
    if workers is None:
        workers = default_workers()
    if hasattr(dataset, "batches"):     # a caller's DataLoader, iterated as it is
        loader = dataset.batches(start)
    elif decode == "device":            # workers read bytes; the batch is decoded on the device below
        from repanalysis.data.device_decode import EncodedImages, collate_encoded

        loader = DataLoader(EncodedImages(dataset, range(offset + start, offset + n)), batch_size=batch_size,
                            shuffle=False, num_workers=workers, collate_fn=collate_encoded,
                            persistent_workers=False, prefetch_factor=4 if workers else None)
    else:
        loader = DataLoader(Subset(dataset, range(offset + start, offset + n)), batch_size=batch_size, shuffle=False,
                            num_workers=workers, pin_memory=dev.type == "cuda", persistent_workers=False,
                            prefetch_factor=4 if workers else None)
    bar = _progress(n, start, progress)
    pos = start
    last_commit = time.monotonic()
    tap = FeatureTap(net, layer, mode="input" if layer_input else "output") if layer else None
    try:
        if tap:
            tap.__enter__()
        with torch.inference_mode():
            for i, (x, y, idx) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                if decode == "device":
                    from repanalysis.data.device_decode import decode_batch

                    x = decode_batch(x, dataset.transform, dev)
                x = x.to(dev, non_blocking=True)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(dev, precision):
                    z = net(x)
                rows = {"logits": z.float().cpu().numpy(), "labels": np.asarray(y, dtype=np.int64),
                        "ids": np.asarray(idx, dtype=np.int64)}
                if tap:
                    rows["features"] = tap.value.float().cpu().numpy()
                writer.write(pos, rows)
                pos += len(y)
                if bar:
                    bar.update(len(y))
                if time.monotonic() - last_commit > 2.0 or pos == n:
                    writer.commit(pos)
                    last_commit = time.monotonic()
        writer.commit(pos)
    finally:
        if pos > writer.done:  # keep the rows finished before an interruption
            try:
                writer.commit(pos)
            except OSError:
                pass
        if tap:
            tap.__exit__()
        if bar:
            bar.close()


def default_workers() -> int:
    """DataLoader workers when none are asked for: the cores this process may use (its share when torchrun runs
    several on one machine, LOCAL_WORLD_SIZE) less one for the model, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return min(8, max(0, share - 1))


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from repanalysis.progress import progress_bar

    return progress_bar(total, initial=initial, unit="img", unit_scale=True, desc="extract")


def count_nonfinite(logits) -> int:
    """Rows of ``logits`` (an (N, K) array or memory map, read in chunks) holding a NaN or inf."""
    bad = 0
    for s in range(0, len(logits), 65536):
        bad += int((~np.isfinite(logits[s:s + 65536])).any(axis=1).sum())
    return bad
