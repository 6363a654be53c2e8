"""Grad-CAM localisation of one or more checkpoints against object boxes or masks (MaxSup sec. 5.3-5.4).

Example: ``repanalysis gradcam --checkpoint ce.pth --checkpoint maxsup.pth --names CE,MaxSup
--data imagenet/val --boxes LOC_val_solution.csv --limit 2000``. Prints one row per model (mean
precision, recall, F1, IoU, pointing games) and writes gradcam.json, gradcam_per_image.csv and the
overlay grid / precision-recall figures to --out.
"""
from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from repanalysis.cli.common import (data_or_configured, default_workers, device_option, echo_json, json_option,
                                    names_option, out_option, quiet_option, split_names, transform_options,
                                    transform_overrides)
from repanalysis.errors import RepanalysisError

METHOD_CHOICES = ["gradcam", "gradcam++", "xgradcam", "eigencam", "layercam", "hirescam", "gradcam-elementwise",
                  "eigengradcam", "scorecam", "ablationcam", "fullgrad", "kpcacam", "fem", "randomcam"]  # = repanalysis.analyze.cam.METHODS (not imported here: keeps --help fast)
TABLE_COLUMNS = ["model", "images", "skipped", "accuracy", "precision", "recall", "f1", "iou", "pointing",
                 "energy_pg", "pr_area", "box_share", "maxboxacc", "maxboxacc_v2", "top1_loc"]
FAITHFULNESS_COLUMNS = ["avg_drop", "increase", "road_morf", "road_lerf", "road_combined"]


@click.command("gradcam")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Checkpoint (repeat for several models).")
@names_option
@click.option("--arch", default=None, help="torchvision/timm architecture of every checkpoint (inferred if omitted).")
@click.option("--data", default=None, help="Data set (ImageNet val folder, ImageFolder, ...). Default: configured.")
@click.option("--layout", default="auto", show_default=True, help="Data layout (see `repanalysis extract --help`).")
@click.option("--split", default=None, help="Split for data sets that have several.")
@click.option("--class-order", default=None, type=click.Path(path_type=Path),
              help="File of class ids/names, line i = the model's class i.")
@click.option("--boxes", default=None, type=click.Path(path_type=Path),
              help="LOC_val_solution.csv, a folder of VOC XML, a 'path,x0,y0,x1,y1' list, or a folder of PNG masks. "
                   "Default: the data set's LOC_val_solution.csv.")
@click.option("--synsets", default=None, type=click.Path(path_type=Path),
              help="LOC_synset_mapping.txt (class order of the box file's WordNet ids).")
@click.option("--target", type=click.Choice(["gt", "pred"]), default="gt", show_default=True,
              help="Class each CAM explains: ground truth or the model's prediction.")
@click.option("--method", type=click.Choice(METHOD_CHOICES, case_sensitive=False), default="gradcam",
              show_default=True)
@click.option("--layer", default=None, help="Target layer by name (default: chosen per family).")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="tau: CAM mask = CAM >= tau.")
@click.option("--topk", default=None, type=float, help="Use the top fraction of pixels as the mask (e.g. 0.15).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Only the first N images.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--strict", is_flag=True, help="Fail on an image without a box instead of skipping it, and on a flat "
              "ImageNet val folder holding only some of the images its labels file lists.")
@click.option("--faithfulness", is_flag=True, help="Also Average Drop / Increase in Confidence and ROAD (MoRF, LeRF, "
              "combined) per model: about 37 extra forward passes per image.")
@click.option("--show", default=6, show_default=True, type=click.IntRange(1, 20), help="Images in the grid figure.")
@device_option()
@click.option("--workers", default=None, type=click.IntRange(0), help="DataLoader workers (default: cores - 1, max 8).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow pickled code / TorchScript checkpoints.")
@click.option("--ema", is_flag=True, help="Use each checkpoint's EMA weights (timm state_dict_ema, torchvision/DeiT "
              "model_ema) instead of its live weights.")
@transform_options
@out_option("repanalysis-out/gradcam")
@json_option
@quiet_option
def command(checkpoints, names, arch, data, layout, split, class_order, boxes, synsets, target, method, layer,
            threshold, topk, limit, batch_size, strict, faithfulness, show, device, workers, trust_checkpoint, ema, out, as_json,
            quiet, **transform_flags):
    """Grad-CAM localisation: CAM precision/recall/F1/IoU on object boxes, per model, with overlay grids."""
    from repanalysis.outputs import output_set
    from repanalysis.dump.provenance import checkpoint_inputs, with_provenance
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.cam import localise_checkpoints
    from repanalysis.analyze.localisation import check_threshold
    from repanalysis.plot.cam import plot_cam_grid, plot_pr_curves
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_csv_atomic, write_json_atomic

    if topk is not None and not 0 < topk <= 1:
        raise RepanalysisError(f"--topk must lie in (0, 1]; got {topk}")
    explicit = click.get_current_context().get_parameter_source("threshold") == ParameterSource.COMMANDLINE
    if topk is not None and explicit:
        raise RepanalysisError(f"--topk {topk:g} and --threshold {threshold:g} both choose the CAM mask; expected "
                               "one of them (--topk takes the top fraction of pixels, --threshold cuts at tau)")
    check_threshold(threshold, "--threshold")      # before any model is loaded
    overrides = transform_overrides(transform_flags)  # each model's own transform with these fields replaced
    data, layout, split, class_order = data_or_configured(data, layout, split, class_order)
    dev = pick_device(device)
    workers = default_workers(workers)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    results, class_names = localise_checkpoints(
        checkpoints, data, boxes, names=split_names(names), arch=arch, layout=layout, split=split,
        class_order=class_order, synsets=synsets, trust_checkpoint=trust_checkpoint, ema=ema, device=dev, log=log,
        method=method, layer=layer, target=target, threshold=threshold, topk=topk, batch_size=batch_size,
        limit=limit, strict=strict, keep=show, workers=workers, transform=overrides, progress=not quiet,
        faithfulness=faithfulness)

    out.mkdir(parents=True, exist_ok=True)
    payload = {"method": method, "target": target, "threshold": threshold, "topk": topk, "ema": ema,
               "boxes": str(boxes) if boxes else None, "models": [r.to_dict() for r in results]}
    written = [out / "gradcam.json", out / "gradcam_per_image.csv"]
    with output_set():                       # JSON, CSV and both figures replace the last run's together
        write_json_atomic(out / "gradcam.json", with_provenance(payload, inputs=checkpoint_inputs(
            checkpoints, [r.name for r in results], data, overrides, ema)))
        write_csv_atomic(out / "gradcam_per_image.csv", [row for r in results for row in r.per_image_rows()])
        written += save_figure(plot_cam_grid(results, max_images=show, class_names=class_names), out / "gradcam_grid")
        written += save_figure(plot_pr_curves(results).figure, out / "gradcam_pr")
    if as_json:
        echo_json(payload)
    else:
        click.echo(format_table([r.summary() for r in results],
                                TABLE_COLUMNS + (FAITHFULNESS_COLUMNS if faithfulness else []),
                                headers={"energy_pg": "energy", "pointing": "pointing", "box_share": "box share",
                                         "maxboxacc_v2": "maxboxacc v2", "top1_loc": "top-1 loc",
                                         "avg_drop": "avg drop %", "increase": "increase"}))
    for path in written:
        click.echo(f"wrote {path}", err=True)

