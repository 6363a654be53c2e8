"""The analyses of a comparison, one function each: ``part_<analysis>(job) -> Part``.

Each function composes the library's analysis, table and figure functions (it computes nothing itself): it
returns the tables (rows, headers, a caption saying what they show and how to read them), the figures it saved
(with captions), the JSON payload, the paired differences against the baseline, and the Results (for
``to_frame``). A part whose inputs are missing returns ``Part(skipped=reason)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass
class TableOut:
    stem: str                    # file stem under tables/ (written as .md, .csv, .json)
    title: str
    caption: str
    rows: list[dict]             # numeric rows (CSV, JSON)
    display: list[dict] | None = None      # rows for Markdown / HTML (e.g. "value [low, high]" cells); default rows
    headers: dict | None = None
    columns: list[str] | None = None
    digits: int = 4
    mark: str | None = None
    mark_note: str | None = None


@dataclass
class FigureOut:
    path: Path                   # the PNG (a PDF beside it)
    title: str
    caption: str


@dataclass
class Part:
    key: str
    title: str
    intro: str = ""
    tables: list[TableOut] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)
    payload: dict = field(default_factory=dict)
    paired: list = field(default_factory=list)           # PairedDifference rows
    results: list = field(default_factory=list)          # Results with .to_frame()
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    def add_figures(self, written, captions: dict) -> None:
        """The PNGs among a save call's ``written`` files whose stem ``captions`` names: stem -> (title, caption)."""
        self.figures += [FigureOut(Path(p), *captions[Path(p).stem]) for p in written
                         if Path(p).suffix == ".png" and Path(p).stem in captions]


@dataclass
class Job:
    """What every part gets: the models' Dumps and options (see :func:`repanalysis.compare.compare`)."""

    names: list[str]
    val: list                                # Dumps of the evaluation data, one per model, same samples
    train: list | None
    ood: list | None
    checkpoints: list | None                 # paths (Grad-CAM needs the models)
    data: object                             # the evaluation data set (path), for Grad-CAM
    boxes: object
    classes: object                          # class names/indices or "auto"
    baseline: str
    figures: Path                            # folder for figures
    n_boot: int = 1000
    seed: int = 0
    ci_level: float = 0.95
    n_bins: int = 15
    device: object = "cpu"
    cam_limit: int | None = None
    cam_options: dict = field(default_factory=dict)
    embed: bool = True
    progress: bool = False
    log: Callable[[str], None] = print

    def figure(self, paths, title: str, caption: str) -> list[FigureOut]:
        """The PNG of a save_figure call's files as a FigureOut."""
        png = next(Path(p) for p in paths if str(p).endswith(".png"))
        return [FigureOut(png, title, caption)]


def _paired(job: Job, analysis: str, split: str | None, estimates: dict, replicates: dict, n: int, metrics=None):
    from repanalysis.analyze.paired import paired_differences

    return paired_differences(estimates, replicates, job.baseline, analysis=analysis, split=split, n=n,
                              ci_level=job.ci_level, metrics=metrics)


def _interval_cell(value: float, ci, scale: float, nd: int) -> str:
    cell = f"{scale * value:.{nd}f}"
    if ci:
        cell += f" [{scale * ci[0]:.{nd}f}, {scale * ci[1]:.{nd}f}]"
    return cell


# --- calibration (FedLaS Table 1) ----------------------------------------------------------------------------
FEDLAS_COLUMNS = (("accuracy", "Acc %", 100), ("ece", "ECE %", 100), ("aece", "AECE %", 100),
                  ("oece", "O-ECE %", 100), ("uece", "U-ECE %", 100), ("nll", "NLL", 1))


def part_calibration(job: Job) -> Part:
    from repanalysis.analyze.calibration import calibrate_dumps
    from repanalysis.analyze.confidence import confidence_dumps, ood_dumps
    from repanalysis.analyze.paired import check_paired_samples
    from repanalysis.plot.calibration import save_calibration_figures

    part = Part("calibration", "Calibration (FedLaS Table 1)",
                "Equal-width ECE, adaptive ECE (Mukhoti et al. 2020) and the over-/under-confidence split O-ECE / "
                f"U-ECE (FedLaS) with {job.n_bins} bins on the evaluation data, with NLL.")
    results = calibrate_dumps(job.val, n_bins=job.n_bins, n_boot=job.n_boot, seed=job.seed, ci_level=job.ci_level,
                              device=job.device, progress=job.progress)
    level = f"{100 * job.ci_level:g}%"
    rows, display = [], []
    for r in results:
        row, shown = {"model": r.name, "N": r.num_samples}, {"model": r.name, "N": r.num_samples}
        for key, header, scale in FEDLAS_COLUMNS:
            row[key] = getattr(r, key)
            if key in r.ci:
                row[f"{key}_ci_low"], row[f"{key}_ci_high"] = r.ci[key]
            shown[header] = _interval_cell(getattr(r, key), r.ci.get(key), scale, 2 if scale == 100 else 4)
        rows.append(row)
        display.append(shown)
    part.tables.append(TableOut(
        "table1_calibration", "Calibration, FedLaS Table 1 layout",
        f"Accuracy, ECE, adaptive ECE, over- and under-confidence ECE (in %) and NLL of each model on the evaluation "
        f"data, {level} bootstrap intervals in brackets ({job.n_boot} resamples); lower ECE / NLL is better "
        "calibrated, and O-ECE vs U-ECE says whether the miscalibration is over- or under-confidence.",
        rows, display=display))
    confidence = confidence_dumps(job.val, names=job.names, device=job.device)
    part.tables.append(TableOut(
        "confidence_auroc", "Telling right from wrong predictions",
        "AUROC of each confidence score (max softmax, max logit, energy, feature L1 norm) for separating correct "
        "from misclassified samples; 0.5 is chance, higher is a more useful confidence.",
        [{"model": c.name, **c.auroc} for c in confidence]))
    ood = []
    if job.ood:
        ood = ood_dumps(job.val, job.ood, names=job.names, device=job.device)
        part.tables.append(TableOut(
            "ood_detection", "Out-of-distribution detection",
            "AUROC and FPR at 95% TPR of each score with the evaluation data as positives and the OOD data as "
            "negatives; higher AUROC and lower FPR are better.",
            [{"model": o.name, **{f"AUROC {k}": o.auroc[k] for k in o.auroc},
              **{f"FPR@95%TPR {k}": o.fpr_at_95_tpr[k] for k in o.auroc}} for o in ood]))
    else:
        part.notes.append("No OOD data was given (--ood-data), so OOD detection is not in this report.")
    written = save_calibration_figures(job.figures / "calibration", calibration=results, misclassification=confidence,
                                       ood=ood, bands=job.n_boot > 0)
    captions = {
        "reliability": ("Reliability diagrams", "Accuracy against confidence per equal-width bin, one panel per "
                        "model: bars below the diagonal are over-confident bins, above it under-confident; the "
                        "whiskers are each bin's bootstrap band (a gap inside its band may be noise)."),
        "reliability_adaptive": ("Reliability diagrams, adaptive bins", "The same with equal-mass bins (each bin "
                                 "holds the same number of samples), so sparse high-confidence regions do not hide."),
        "confidence_hist": ("Confidence histograms", "Distribution of max-softmax confidence per model; the dashed "
                            "lines mark mean confidence and accuracy, their gap is the average over-confidence."),
        "nci_scatter": ("Feature-norm confidence", "Feature L1 norm (FedLaS NCI) against max-softmax confidence "
                        "per sample, correct and wrong predictions apart."),
        "ood_roc": ("OOD ROC curves", "True-positive against false-positive rate for telling evaluation data from "
                    "the OOD data; the closer to the top-left corner, the better."),
    }
    part.add_figures(written, captions)
    n = check_paired_samples({r.name: r.num_samples for r in results}, "calibration")
    part.paired = _paired(job, "calibration", "val", {r.name: {k: getattr(r, k) for k, _, _ in FEDLAS_COLUMNS}
                                                      for r in results},
                          {r.name: r.replicates for r in results}, n, [k for k, _, _ in FEDLAS_COLUMNS]) \
        if job.n_boot else []
    part.payload = {"n_bins": job.n_bins, "n_boot": job.n_boot, "ci_level": job.ci_level, "seed": job.seed,
                    "models": [r.to_dict() for r in results], "confidence": [c.to_dict() for c in confidence],
                    "ood": [o.to_dict() for o in ood]}
    part.results = [*results, *confidence, *ood]
    return part


# --- logits (MaxSup Fig. 2/3) --------------------------------------------------------------------------------
def part_logits(job: Job) -> Part:
    from repanalysis.analyze.logits import TABLE_HEADERS, compare_logits, comparison_dict, comparison_table
    from repanalysis.analyze.paired import LOGIT_METRICS, check_paired_samples, logit_replicates
    from repanalysis.plot.logits import save_logit_figures

    part = Part("logits", "Logit statistics (MaxSup Fig. 2 / 3)",
                "Near-zero logits (|z| < 0.01), top-1 probability, logit range and the label-smoothing "
                "error-enhancement term of MaxSup Corollary 3.4 on the evaluation data.")
    stats = compare_logits(job.val, names=job.names, threshold=0.01, alpha=0.1, device=job.device)
    rows = comparison_table(stats)
    part.tables.append(TableOut(
        "logits", "Logit table",
        "Per model: accuracy, mean fraction of near-zero logits, mean top-1 probability, mean logit range, the share "
        "of samples where LS's error-enhancement term is active and its share of the LS loss; LS typically raises "
        "the near-zero fraction and shrinks the range, MaxSup keeps the error-enhancement share at zero by design.",
        rows, headers=TABLE_HEADERS))
    written = save_logit_figures(stats, job.figures / "logits")
    captions = {
        "logit_analysis": ("Near-zero logits and confidence", "Per model: histogram of the fraction of near-zero "
                           "logits per sample, and top-1 probability against it (MaxSup Fig. 2)."),
        "logit_comparison": ("Logit distributions", "Near-zero fraction histograms overlaid and the kernel density "
                             "of all logits per model (MaxSup Fig. 3): a narrower density means smaller logits."),
        "ls_split": ("LS regularisation vs error enhancement", "Per sample, the two parts of the LS term (Corollary "
                     "3.4): regularisation of logits below z_y and error enhancement from logits above it."),
    }
    part.add_figures(written, captions)
    if job.n_boot:
        n = check_paired_samples({s.name: s.num_samples for s in stats}, "logits")
        estimates = {row["model"]: {k: row[k] for k in LOGIT_METRICS} for row in rows}
        replicates = {s.name: logit_replicates(s, job.n_boot, job.seed) for s in stats}
        part.paired = _paired(job, "logits", "val", estimates, replicates, n, LOGIT_METRICS)
    part.payload = comparison_dict(stats)
    part.results = stats
    return part


# --- feature geometry (MaxSup Table 2, Fig. 4-5) ----------------------------------------------------------------
def part_geometry(job: Job) -> Part:
    from repanalysis.analyze.collapse import neural_collapse
    from repanalysis.analyze.geometry import class_separation, separation_table
    from repanalysis.analyze.paired import SEPARATION_METRICS, separation_replicates
    from repanalysis.analyze.projection import project_dump
    from repanalysis.data.class_resolution import resolve_for_dumps
    from repanalysis.plot.geometry import plot_feature_norms, plot_projections, plot_separation_bars
    from repanalysis.plot.style import save_figure

    missing = [n for n, d in zip(job.names, job.val) if d.features is None]
    if missing:
        return Part("geometry", "Feature geometry", skipped=f"the Dumps of {', '.join(missing)} hold no penultimate "
                    "features (logits-only Dumps); extract them with features to get this section")
    part = Part("geometry", "Feature geometry (MaxSup Table 2, Fig. 4-5)",
                "Class separation of the penultimate features by cosine distance (Kornblith et al. 2021): d_within "
                "is the mean distance inside a class, R^2 = 1 - d_within / d_total.")
    splits = [("train", job.train)] if job.train else []
    splits.append(("val", job.val))
    seps = [class_separation(d, name=n, split=split, device=job.device)
            for split, dumps in splits for n, d in zip(job.names, dumps)]
    part.tables.append(TableOut(
        "table2_separation", "Class separation, MaxSup Table 2 layout",
        "Mean within-class cosine distance d_within, mean overall distance d_total and R^2 per model"
        + (", train and evaluation data side by side" if job.train else " on the evaluation data")
        + "; smaller d_within and larger R^2 mean tighter, better separated classes (MaxSup reports LS "
          "tightening classes more than CE, and MaxSup keeping more within-class variation than LS).",
        separation_table(seps)))
    if not job.train:
        part.notes.append("No training data was given (--train-data), so the train columns of Table 2 are absent.")
    part.figures += job.figure(save_figure(plot_separation_bars(seps)[0].figure, job.figures / "geometry" / "separation"),
                               "Separation bars", "d_within and R^2 per model, train and evaluation data side by side "
                               "(evaluation hatched).")
    if job.n_boot:
        for split, dumps in splits:
            estimates = {r.name: {k: getattr(r, k) for k in SEPARATION_METRICS} for r in seps if r.split == split}
            replicates = {n: separation_replicates(d.features, d.labels, job.n_boot, job.seed,
                                                   num_classes=d.num_classes, device=job.device)
                          for n, d in zip(job.names, dumps)}
            part.paired += _paired(job, "separation", split, estimates, replicates, dumps[0].num_samples,
                                   SEPARATION_METRICS)
    classes = resolve_for_dumps(job.classes, job.val)
    class_names = job.val[0].class_names
    shown = ", ".join(class_names[i] if class_names else str(i) for i in classes)
    projs = [project_dump(d, classes, method="template", samples_per_class=80, seed=job.seed, name=n)
             for n, d in zip(job.names, job.val)]
    how = "picked as the triplet the models confuse most" if str(job.classes).lower() == "auto" else "as asked"
    part.figures += job.figure(save_figure(plot_projections(projs, decision_regions=True, split="val"),
                                           job.figures / "geometry" / "projection_template"),
                               f"3-class projection: {shown}",
                               f"Penultimate features of classes {shown} ({how}) projected onto the plane through "
                               "their three classifier templates (Müller et al. 2019), with the decision regions; "
                               "tight, separated clusters are what LS produces, MaxSup keeps them wider.")
    if job.embed:
        from repanalysis.analyze.embed import embed_dumps
        from repanalysis.plot.geometry import plot_embeddings

        embs = embed_dumps(job.val, None, names=job.names, method="umap", samples_per_class=100, seed=job.seed,
                           progress=job.progress)
        part.figures += job.figure(save_figure(plot_embeddings(embs, split="val"), job.figures / "geometry" / "umap"),
                                   "UMAP of the features", "A 2-D UMAP (cosine metric) of up to 100 samples per class "
                                   "per model; only the grouping is comparable between panels, not the scales.")
        part.results += embs
    collapse_dumps, collapse_split = (job.train, "train") if job.train else (job.val, "val")
    cols = [neural_collapse(d, name=n, device=job.device) for n, d in zip(job.names, collapse_dumps)]
    part.tables.append(TableOut(
        "collapse", f"Neural collapse ({collapse_split} data)",
        "NC1 (within-class variability relative to between-class, smaller = more collapsed), NC2 (equinorm / "
        "equiangular class means), NC3 (class means vs classifier), NC4 (nearest-mean agreement), the variability "
        "collapse index VCI and the mean feature norm (Papyan et al. 2020; Xu et al. 2023).",
        [c.summary() for c in cols]))
    part.figures += job.figure(save_figure(plot_feature_norms(cols, class_names=class_names,
                                                              split=collapse_split).figure,
                                           job.figures / "geometry" / "feature_norms"),
                               "Feature norms per class", "Mean L2 norm of the penultimate features of each class "
                               f"per model ({collapse_split} data); FedLaS links larger norms with confidence.")
    part.payload = {"separation": [r.to_dict() for r in seps], "projection_classes": [int(c) for c in classes],
                    "collapse": [c.to_dict() for c in cols]}
    part.results += [*seps, *cols, *projs]
    return part


# --- Grad-CAM localisation (MaxSup Sec. 5.4) ---------------------------------------------------------------------
CAM_COLUMNS = ["model", "images", "accuracy", "precision", "recall", "f1", "iou", "pointing", "energy_pg", "pr_area",
               "box_share", "maxboxacc", "top1_loc"]


def part_gradcam(job: Job) -> Part:
    from repanalysis.analyze.cam import localise_checkpoints
    from repanalysis.analyze.paired import LOCALISATION_METRICS, localisation_replicates
    from repanalysis.plot.cam import plot_cam_grid, plot_pr_curves
    from repanalysis.plot.style import save_figure

    title = "Grad-CAM localisation (MaxSup Sec. 5.4)"
    if job.boxes is None:
        return Part("gradcam", title, skipped="no object boxes were given (--boxes FILE), so where the models look "
                    "cannot be scored")
    if not job.checkpoints:
        return Part("gradcam", title, skipped="Grad-CAM needs the models, and the inputs were Dumps whose checkpoints "
                    "are not at the paths they record")
    if job.data is None:
        return Part("gradcam", title, skipped="Grad-CAM needs the images, and the evaluation data set is not known")
    part = Part("gradcam", title, "Grad-CAM of each model's ground-truth class at its last convolutional stage, "
                "scored against the object boxes: the CAM above 0.5 of its maximum is the predicted region.")
    options = dict(job.cam_options)
    if job.cam_limit is not None:
        options.setdefault("limit", job.cam_limit)
    results, class_names = localise_checkpoints(job.checkpoints, job.data, job.boxes, names=job.names,
                                                device=job.device, progress=job.progress, keep=6, **options)
    rows = [r.summary() for r in results]
    part.tables.append(TableOut(
        "gradcam", "Grad-CAM localisation",
        f"Means over {results[0].num_images} images: precision (share of the CAM region inside the box), recall "
        "(share of the box covered), F1, IoU, pointing game (CAM maximum in the box), energy-based pointing game, "
        "area under the precision-recall sweep, the box's share of the image (the precision of a CAM covering "
        "everything), MaxBoxAcc (Choe et al. 2020: share of images whose box around the largest CAM component has "
        "IoU >= 0.5 with the object, at the best threshold) and Top-1 Loc (that, and the class right); higher is "
        "better.", rows, columns=CAM_COLUMNS))
    part.figures += job.figure(save_figure(plot_cam_grid(results, max_images=6, class_names=class_names),
                                           job.figures / "gradcam" / "grid"),
                               "Grad-CAM overlays", "The same images for every model (rows), CAM as a heat map with "
                               "the object box outlined; a CAM concentrated inside the box is a well-localised one.")
    part.figures += job.figure(save_figure(plot_pr_curves(results).figure, job.figures / "gradcam" / "pr_curves"),
                               "CAM precision-recall", "Mean precision against mean recall of the region CAM >= tau "
                               "as tau sweeps 0..1, one line per model; dotted: the box share (chance precision).")
    if job.n_boot:
        estimates = {r.name: {k: row[k] for k in LOCALISATION_METRICS} for r, row in zip(results, rows)}
        replicates = {r.name: localisation_replicates(r, job.n_boot, job.seed) for r in results}
        part.paired = _paired(job, "gradcam", "val", estimates, replicates, results[0].num_images,
                              LOCALISATION_METRICS)
    part.payload = {"models": [r.to_dict() for r in results]}
    part.results = results
    return part


# --- per class (issue 18: where two losses differ, MaxSup's claim on confidence in wrong predictions) ----------
def part_per_class(job: Job) -> Part:
    from repanalysis.analyze.per_class import per_class_report
    from repanalysis.plot.per_class import save_per_class_figures

    part = Part("per_class", "Per class",
                "Per-class accuracy of each model, the per-class difference against the baseline with a paired "
                "bootstrap interval, and the max-softmax confidence of each model's wrong predictions (MaxSup's "
                "claim: LS raises confidence in its errors).")
    res = per_class_report(job.val, names=job.names, baseline=job.baseline, n_boot=job.n_boot, seed=job.seed,
                           ci_level=job.ci_level, device=job.device, split="val")
    level = f"{100 * job.ci_level:g}%"
    rows, display = [], []
    for model in job.names:
        ec = res.error_confidence[model]
        row = {"model": model, "errors": ec.num_errors, "error confidence": ec.mean, "CI low": ec.ci_low,
               "CI high": ec.ci_high, "median": ec.median, "correct confidence": ec.mean_correct}
        if model != job.baseline:
            diffs = res.differences[model]
            sig = [r for r in diffs if r.excludes_zero]
            finite = [r for r in diffs if r.difference == r.difference]
            best = max(finite, key=lambda r: r.difference, default=None)
            worst = min(finite, key=lambda r: r.difference, default=None)
            row.update({"classes better": sum(r.difference > 0 for r in sig),
                        "classes worse": sum(r.difference < 0 for r in sig),
                        "largest gain": f"{best.metric} ({best.difference:+.3f})" if best else None,
                        "largest loss": f"{worst.metric} ({worst.difference:+.3f})" if worst else None})
        rows.append(row)
        shown = {k: v for k, v in row.items() if k not in ("CI low", "CI high")}
        shown["error confidence"] = _interval_cell(ec.mean, (ec.ci_low, ec.ci_high), 1, 3)
        display.append(shown)
    part.tables.append(TableOut(
        "per_class", "Per class: confidence in errors, classes that differ",
        f"Per model: its misclassified samples, their mean max-softmax confidence with a {level} bootstrap interval "
        "and median (lower is better: a confident error is the costly kind), the mean confidence of its correct "
        f"predictions, and against {job.baseline}: how many classes are significantly better / worse (paired "
        f"{level} interval of the per-class accuracy difference excludes 0) and the largest gain and loss. Every "
        "class's difference is in per_class.json and the figure.",
        rows, display=display, digits=4))
    written = save_per_class_figures(res, job.figures / "per_class")
    captions = {
        "per_class_difference": ("Per-class accuracy difference", f"Accuracy minus {job.baseline}'s per class, "
                                 f"sorted, with paired {level} intervals; classes whose interval excludes 0 in colour."),
        "per_class_accuracy": ("Per-class accuracy", "Accuracy of each model on each class."),
        "error_confidence": ("Confidence in wrong predictions", "Distribution of max-softmax confidence over each "
                             "model's misclassified samples; mass on the right means confident mistakes."),
    }
    part.add_figures(written, captions)
    part.payload = res.to_dict()
    part.results = [res]
    return part


PARTS = (part_calibration, part_logits, part_geometry, part_per_class, part_gradcam)


def paired_rows(parts) -> list:
    return [row for p in parts for row in p.paired]


def check_finite_rows(job: Job) -> None:
    """Rows with NaN/inf logits are left out by each analysis; the pairing then breaks: say which model."""
    from repanalysis.errors import DataError

    for name, d in zip(job.names, job.val):
        bad = d.meta.get("nonfinite_logit_rows") if isinstance(d.meta, dict) else None
        if bad is None:
            bad = int((~np.isfinite(np.asarray(d.logits)).all(axis=1)).sum())
        if bad:
            raise DataError(f"{name}: {bad} samples have NaN/inf logits; a comparison needs every model's output on "
                            "every image (re-extract after fixing the checkpoint, or compare without this model)")
