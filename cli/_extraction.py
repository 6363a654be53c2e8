"""Options and flow shared by `repanalysis logits` and `repanalysis extract` (parsing + library calls)."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from repanalysis.cli.common import TRANSFORM_OPTIONS, device_option, transform_overrides
from repanalysis.errors import RepanalysisError

OPTIONS = [
    click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
                 help="Checkpoint: .pth/.pt (state_dict, DDP/compile prefixes, DeiT, Lightning, FFCV) or .safetensors."),
    click.option("--arch", default=None, help="torchvision or timm model name (inferred from the checkpoint when omitted)."),
    click.option("--data", default=None, help="Data set path (ImageFolder, ImageNet val + val_map.txt/LOC csv, "
                 "CIFAR batches, MNIST IDX, .npz). Default: data.root from `repanalysis config`."),
    click.option("--layout", default=None, help="Data layout (auto, imagefolder, imagenet-val, cifar10, cifar100, mnist, npz)."),
    click.option("--split", default=None, help="Split for data sets that have several: train or test for CIFAR/MNIST (default test), a train/, val/ or test/ sub-folder, or <split>.npz."),
    click.option("--class-order", default=None, type=click.Path(path_type=Path),
                 help="File of class ids/names, line i = the model's class i."),
    click.option("--labels-file", default=None, type=click.Path(path_type=Path),
                 help="ImageNet val labels: val_map.txt or LOC_val_solution.csv (default: found beside the images)."),
    click.option("--synsets-file", default=None, type=click.Path(path_type=Path),
                 help="LOC_synset_mapping.txt (class index order) for LOC_val_solution.csv labels."),
    click.option("--output", default=None, type=click.Path(path_type=Path), help="Output Dump folder or .pt file."),
    click.option("--overwrite", is_flag=True, help="Replace an existing output."),
    click.option("--shard", default=None, metavar="I/N", help="Extract only shard I of N (0-based): a contiguous "
                 "range of whole batches, into a Dump of its own (default output: <output>-shard-I-of-N); join the N "
                 "shards with `repanalysis merge-dumps`. Under torchrun each rank takes its shard by itself."),
    click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1)),
    device_option(),
    click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True),
    click.option("--decode", type=click.Choice(["pil", "device"]), default="pil", show_default=True,
                 help="device: decode JPEGs in batches on the extraction device (nvJPEG on a GPU) and resize / crop / "
                 "normalise there, instead of with PIL in the loader workers (a different run: pixels differ by "
                 "rounding)."),
    click.option("--workers", default=None, type=click.IntRange(0), help="DataLoader workers (default: cores - 1, max 8)."),
    *TRANSFORM_OPTIONS,      # --resolution, --crop-ratio, --interpolation, --mean, --std (shared with gradcam)
    click.option("--skip-bad", is_flag=True, help="Skip unreadable images (recorded in meta.json) instead of failing."),
    click.option("--strict", is_flag=True, help="Refuse a flat ImageNet val folder holding only some of the images "
                 "its labels file lists (default: use those present, with a warning)."),
    click.option("--trust-checkpoint", is_flag=True, help="Allow pickled code / TorchScript checkpoints (runs code from the file)."),
    click.option("--ema", is_flag=True, help="Use the checkpoint's EMA weights (timm state_dict_ema, torchvision/DeiT "
                 "model_ema) instead of its live weights; default output runs/<checkpoint-stem>/features-ema/ "
                 "(logits-ema/ for `logits`)."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def extraction_options(fn):
    for option in reversed(OPTIONS):
        fn = option(fn)
    return functools.wraps(fn)(fn)


def run(kind: str, opts: dict, features: bool, feature_layer: str | None = None, feature_dtype: str = "float32"):
    """Resolve defaults (config), load, extract; print a summary. Returns the Dump."""
    import repanalysis as ra
    from repanalysis import config
    from repanalysis.data.transforms import override_transform
    from repanalysis.report import format_table

    data, layout, split, class_order = opts["data"], opts["layout"], opts["split"], opts["class_order"]
    if data is None:
        d = config.default_data()
        data, layout = d["spec"], layout or d["layout"]
        split, class_order = split or d["split"], class_order or d["class_order"]
    from repanalysis.dump.shards import parse_shard
    from repanalysis.extract.distributed import extract_distributed, launched

    shard = parse_shard(opts["shard"]) if opts["shard"] is not None else None
    ranks = launched()
    if shard is not None and ranks is not None:
        raise RepanalysisError("--shard was given under torchrun, where each rank takes its own shard; expected one "
                               "of the two")
    output = opts["output"] or config.default_output(opts["checkpoint"], kind + ("-ema" if opts["ema"] else ""))
    if shard is not None and opts["output"] is None:
        output = output.with_name(f"{output.name}-shard-{shard[0]}-of-{shard[1]}")
    quiet = opts["quiet"] or (ranks is not None and ranks[0] != 0)        # under torchrun, rank 0 speaks
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    overrides = transform_overrides(opts)            # bad values stop here, before the checkpoint is read
    lm = ra.load_model(opts["checkpoint"], opts["arch"], trust=opts["trust_checkpoint"], log=log, ema=opts["ema"])
    transform = override_transform(lm.transform, **overrides)
    extract = extract_distributed if ranks is not None else functools.partial(ra.extract, shard=shard)
    dump = extract(lm, data, output, features=features, feature_layer=feature_layer,
                      batch_size=opts["batch_size"], device=opts["device"], precision=opts["precision"],
                      workers=opts["workers"], overwrite=opts["overwrite"], skip_bad=opts["skip_bad"],
                      strict=opts["strict"], layout=layout or "auto", split=split, class_order=class_order,
                      transform=transform,
                      labels_file=opts["labels_file"], synsets_file=opts["synsets_file"],
                      feature_dtype=feature_dtype, decode=opts["decode"], progress=not quiet, log=log)
    if dump is None:                     # a rank of a torchrun run other than 0: rank 0 reports
        return None
    click.echo(format_table([summary_row(dump)], headers=HEADERS))
    click.echo(f"wrote {output}")
    return dump


HEADERS = {"nonfinite": "non-finite (excluded)"}


def summary_row(dump) -> dict:
    """N, K, D and accuracy of a Dump. Accuracy counts only rows whose logits are all finite (argmax of NaN
    means nothing); it is None (shown '-') when no row is finite, and ``nonfinite`` counts the rows left out."""
    import numpy as np

    acc, correct, finite = None, 0, 0
    for _, chunk in dump.iter_chunks(("logits", "labels")):
        ok = np.isfinite(chunk["logits"]).all(axis=1)
        finite += int(ok.sum())
        correct += int((np.argmax(chunk["logits"][ok], axis=1) == chunk["labels"][ok]).sum()) if ok.any() else 0
    if finite:
        acc = correct / finite
    row = {"model": dump.name, "N": dump.num_samples, "K": dump.num_classes, "D": dump.feature_dim,
           "accuracy": acc}
    if finite < dump.num_samples:
        row["nonfinite"] = dump.num_samples - finite
    return row
