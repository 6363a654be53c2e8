"""Compare models on the same images: every analysis, paired differences against a baseline, a report.

Example: ``repanalysis compare --checkpoint base.pth --checkpoint ls.pth --checkpoint maxsup.pth
--names Baseline,LS,MaxSup --data VAL --train-data TRAIN --out runs/compare`` extracts what is missing (complete
Dumps under runs/compare/dumps/ are reused), runs every analysis its inputs allow and writes tables, figures and
report.html (see :func:`repanalysis.compare.compare`).
"""
from __future__ import annotations

from pathlib import Path

import click

from repanalysis.cli.common import (bootstrap_options, device_option, names_option, out_option, quiet_option,
                                    transform_options, transform_overrides)


@click.command("compare")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="A model's checkpoint (give it once per model).")
@click.option("--dump", "dumps", multiple=True, type=click.Path(path_type=Path),
              help="Instead of checkpoints: a model's Dump of the evaluation data (once per model).")
@names_option
@click.option("--data", default=None, help="Evaluation data set (default: data.root from `repanalysis config`).")
@click.option("--train-data", default=None, help="Training data set: adds the train columns of MaxSup Table 2 "
              "and neural collapse on it.")
@click.option("--ood-data", default=None, help="Out-of-distribution data set: adds OOD detection.")
@click.option("--train-dump", "train_dumps", multiple=True, type=click.Path(path_type=Path),
              help="With --dump: each model's Dump of the training data, in the same order.")
@click.option("--ood-dump", "ood_dumps", multiple=True, type=click.Path(path_type=Path),
              help="With --dump: each model's Dump of OOD data, in the same order.")
@click.option("--boxes", default=None, type=click.Path(path_type=Path),
              help="Object boxes for Grad-CAM (LOC_val_solution.csv, VOC XML folder, 'path,x0,y0,x1,y1' list, PNG "
              "masks); Grad-CAM is skipped without.")
@click.option("--classes", default="auto", show_default=True,
              help="Three classes for the 3-class projection (names or indices), or auto: the most confused triplet.")
@click.option("--baseline", default=None, help="The model the others are compared against (default: the first).")
@bootstrap_options(what="the paired intervals")
@click.option("--bins", "n_bins", type=click.IntRange(min=1), default=15, show_default=True,
              help="Confidence bins of the calibration metrics.")
@click.option("--cam-images", type=click.IntRange(min=1), default=None,
              help="Grad-CAM on the first N images that have a box (default: all).")
@click.option("--no-embed", is_flag=True, help="Leave out the UMAP embedding (the slowest figure).")
@click.option("--arch", default=None, help="torchvision or timm model name (inferred when omitted).")
@click.option("--layout", default="auto", help="Data layout (auto, imagefolder, imagenet-val, cifar10, mnist, npz...).")
@click.option("--split", default=None, help="Split of the evaluation data set, for data sets that have several.")
@click.option("--class-order", default=None, type=click.Path(path_type=Path),
              help="File of class ids/names, line i = the model's class i.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=None, type=click.IntRange(0), help="DataLoader workers.")
@click.option("--ema", is_flag=True, help="Use each checkpoint's EMA weights.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow pickled code / TorchScript checkpoints.")
@transform_options
@device_option()
@out_option("runs/compare")
@quiet_option
def command(checkpoints, dumps, names, data, train_data, ood_data, train_dumps, ood_dumps, boxes, classes, baseline,
            n_boot, ci_level, seed, n_bins, cam_images, no_embed, arch, layout, split, class_order, batch_size,
            workers, ema, trust_checkpoint, device, out, quiet, **transform):
    """Every analysis of several models side by side, paired differences, report.html."""
    from repanalysis.compare import compare
    from repanalysis.errors import RepanalysisError

    if bool(checkpoints) == bool(dumps):
        raise RepanalysisError("give the models either as --checkpoint (once per model) or as --dump, "
                               + ("not both" if checkpoints else "none was given"))
    if dumps and (data or train_data or ood_data):
        raise RepanalysisError("--data, --train-data and --ood-data go with --checkpoint; with --dump give "
                               "--train-dump / --ood-dump")
    if checkpoints and (train_dumps or ood_dumps):
        raise RepanalysisError("--train-dump and --ood-dump go with --dump; with --checkpoint give --train-data / "
                               "--ood-data")
    overrides = transform_overrides(transform)
    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    classes = classes if classes.strip().lower() == "auto" else [c.strip() for c in classes.split(",")]
    result = compare(list(checkpoints) if checkpoints else None, dumps=list(dumps) if dumps else None, names=names,
                     data=data, train_data=train_data, train_dumps=list(train_dumps) or None, ood_data=ood_data,
                     ood_dumps=list(ood_dumps) or None, boxes=boxes, classes=classes, baseline=baseline, out=out,
                     n_boot=n_boot, ci_level=ci_level, seed=seed, n_bins=n_bins, device=device, arch=arch,
                     trust=trust_checkpoint, ema=ema, transform=overrides or None, layout=layout, split=split,
                     class_order=class_order, batch_size=batch_size, workers=workers, cam_limit=cam_images,
                     embed=not no_embed, progress=not quiet, log=log)
    sig = result.paired.significant()
    click.echo(f"{len(sig)} of {len(result.paired.rows)} paired differences against {result.baseline} exclude 0"
               + (":" if sig else ""))
    for r in sig:
        click.echo(f"  {r.model} - {r.baseline}  {r.analysis} {r.split} {r.metric}: {r.difference:+.4g} "
                   f"[{r.ci_low:+.4g}, {r.ci_high:+.4g}]")
    for part in result.parts:
        if part.skipped:
            click.echo(f"skipped {part.key}: {part.skipped}")
    click.echo(f"wrote {result.report}")
