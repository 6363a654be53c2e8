"""Calibration of several models: :func:`calibrate_dumps` (one report per Dump, and a "+TS" one with a
validation Dump) and :func:`comparison_rows` (FedLaS Table 1/4 layout)."""
from __future__ import annotations

from repanalysis.analyze.calibration.metrics import calibration_report
from repanalysis.analyze.calibration.results import CalibrationResult
from repanalysis.analyze.calibration.temperature import fit_temperature
from repanalysis.arrays import model_names
from repanalysis.dump.pairs import check_same_model
from repanalysis.errors import DataError


def calibrate_dumps(dumps, *, n_bins: int = 15, n_boot: int = 0, seed: int = 0, ci_level: float = 0.95,
                    adaptive_rule: str = "reference", val_dumps=None, names=None,
                    device=None, progress: bool = True) -> list[CalibrationResult]:
    """:func:`calibration_report` for each Dump; with ``val_dumps`` (one per Dump, same model) also fit a
    temperature on it and add the scaled result, named ``"<name> +TS"``, right after the unscaled one.
    ``names``: one per Dump (a list, or 'a,b,c'); default the Dumps' own names. ``progress``: bootstrap bars on
    stderr (only when it is a terminal)."""
    dumps = list(dumps)
    names = model_names(dumps, names)
    if val_dumps is not None and len(val_dumps) != len(dumps):
        raise DataError(f"{len(val_dumps)} validation dumps for {len(dumps)} dumps; expected one per dump")
    out = []
    for i, d in enumerate(dumps):
        kw = {"n_bins": n_bins, "n_boot": n_boot, "seed": seed, "ci_level": ci_level,
              "adaptive_rule": adaptive_rule, "num_classes": d.num_classes, "device": device, "progress": progress}
        out.append(calibration_report(d.logits, d.labels, name=names[i], **kw))
        if val_dumps is not None:
            v = val_dumps[i]
            check_same_model(v, d, "--fit-temperature (validation Dump)")
            if v.num_classes != d.num_classes:
                raise DataError(f"validation dump {v.name} has {v.num_classes} classes but {names[i]} has "
                                f"{d.num_classes}; expected the same model")
            fit = fit_temperature(v.logits, v.labels, num_classes=v.num_classes, device=device)
            scaled = calibration_report(d.logits, d.labels, name=f"{names[i]} +TS", temperature=fit.temperature,
                                        **kw)
            scaled.temperature_fit = {"validation": v.name, **fit.to_dict()}
            out.append(scaled)
    return out


_ROW_KEYS = (("accuracy", "Acc %", 100), ("ece", "ECE %", 100), ("aece", "AECE %", 100),
             ("classwise_ece", "CW-ECE %", 100), ("oece", "O-ECE %", 100), ("uece", "U-ECE %", 100),
             ("nll", "NLL", 1), ("brier", "Brier", 1))
TABLE_HEADERS = {key: header for key, header, _ in _ROW_KEYS}


def comparison_rows(results, digits: int = 2) -> list[dict]:
    """Rows in the layout of FedLaS Table 1/4: model, T, N, then accuracy, ECE, AECE, classwise ECE, O-ECE,
    U-ECE (in %), NLL and Brier; each cell "value [low, high]" when bootstrap intervals exist."""
    rows = []
    for r in results:
        row = {"model": r.name, "T": f"{r.temperature:.3f}", "N": r.num_samples}
        for key, _, scale in _ROW_KEYS:
            nd = digits if scale == 100 else digits + 2
            cell = f"{scale * getattr(r, key):.{nd}f}"
            if key in r.ci:
                lo, hi = r.ci[key]
                cell += f" [{scale * lo:.{nd}f}, {scale * hi:.{nd}f}]"
            row[key] = cell
        rows.append(row)
    return rows
