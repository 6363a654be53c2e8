"""Demo step: calibration (ECE family, reliability diagrams, temperature scaling) and feature-norm confidence.

Temperature scaling needs held-out logits: the test split is halved with a fixed permutation, T is fitted on
one half and every metric is reported on the other half, before and after scaling (FedLaS Table 1/4 layout).
Feature-norm confidence (NCI) and the misclassification AUROCs use the whole test split; OOD AUROC and
FPR@95%TPR use ``ctx.ood_dumps`` when the demo made them.
"""
from __future__ import annotations

ORDER = 40
TITLE = "Calibration: ECE / AECE / classwise ECE / O-U-ECE, temperature scaling, feature-norm confidence (FedLaS)"


def run(ctx) -> None:
    """Write calibration.json and the reliability / confidence / NCI / ROC figures under ``ctx.out / 'calibration'``."""
    import numpy as np

    from repanalysis.analyze.calibration import TABLE_HEADERS, calibrate_dumps, comparison_rows
    from repanalysis.analyze.confidence import misclassification_scores, ood_detection
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.plot.calibration import save_calibration_figures
    from repanalysis.report import format_table, write_json_atomic

    out = ctx.out / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    names = ctx.model_names
    tests = [ctx.dumps[n]["test"] for n in names]
    n = tests[0].num_samples
    perm = np.random.default_rng(0).permutation(n)
    val_idx, eval_idx = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    results = calibrate_dumps([d.subset(eval_idx) for d in tests], val_dumps=[d.subset(val_idx) for d in tests],
                              n_bins=15, n_boot=200, seed=0, device=ctx.device,
                              progress=ctx.progress)
    ctx.log(f"test split halved: T fitted on {len(val_idx)} samples, metrics on the other {len(eval_idx)} "
            "(95% bootstrap intervals, 200 resamples)")
    ctx.log(format_table(comparison_rows(results), headers=TABLE_HEADERS))
    confidence = [misclassification_scores(d.logits, d.labels, d.features, num_classes=d.num_classes, name=name,
                                           device=ctx.device) for name, d in zip(names, tests)]
    ctx.log("AUROC of each score for correct vs wrong predictions (whole test split):")
    ctx.log(format_table([{"model": c.name, **c.auroc} for c in confidence]))
    ood = []
    for name, d in zip(names, tests):
        o = ctx.ood_dumps.get(name)
        if o is None:
            continue
        both = d.features is not None and o.features is not None
        ood.append(ood_detection(d.logits, o.logits, d.features if both else None, o.features if both else None,
                                 name=name, device=ctx.device))
    if ood:
        ctx.log("OOD detection (in-distribution = test split, positive):")
        ctx.log(format_table([{"model": r.name, "score": k, "AUROC": r.auroc[k], "FPR@95%TPR": r.fpr_at_95_tpr[k]}
                              for r in ood for k in r.auroc]))
    else:
        ctx.log("no OOD dumps in this demo run: OOD AUROC skipped")
    write_json_atomic(out / "calibration.json", with_provenance({"models": [r.to_dict() for r in results],
                                                                 "confidence": [c.to_dict() for c in confidence],
                                                                 "ood": [r.to_dict() for r in ood]},
                                                                [*tests, *ctx.ood_dumps.values()]))
    written = save_calibration_figures(out, calibration=results, misclassification=confidence, ood=ood, bands=True)
    ctx.log(f"wrote calibration.json and {len(written)} figure files to {out}")
