"""Calibration of one or more models: accuracy, ECE, AECE, classwise ECE, O-/U-ECE, NLL, Brier with CIs.

Example: ``repanalysis calibration runs/ce runs/ls runs/maxsup --names CE,LS,MaxSup --bootstrap 1000``
prints one row per model (FedLaS Table 1/4 layout, ECE family in %) and writes calibration.json and the
reliability / confidence figures to --out. ``--fit-temperature VAL`` (once per input, in the same order)
fits a temperature on VAL and adds a "+TS" row evaluated on the input.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import (bootstrap_options, device_option, echo_json, json_option, load_dumps, load_inputs,
                                    names_option, out_option, quiet_option)
from repanalysis.errors import RepanalysisError


@click.command("calibration")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--bins", "n_bins", type=click.IntRange(min=1), default=15, show_default=True,
              help="Number of confidence bins (equal-width and adaptive).")
@click.option("--fit-temperature", "val_paths", multiple=True, metavar="VAL_DUMP",
              help="Validation Dump to fit a temperature on; give it once per DUMP, in the same order.")
@bootstrap_options
@click.option("--adaptive-rule", type=click.Choice(["reference", "corrected"]), default="reference",
              show_default=True, help="reference: the lowest-confidence sample is in no adaptive bin (as the "
              "reference code); corrected: it is in the first bin.")
@click.option("--bands", is_flag=True, help="Draw each reliability bin's accuracy with its bootstrap band "
              "(needs --bootstrap > 0).")
@device_option()
@out_option("repanalysis-out/calibration")
@json_option
@quiet_option
def command(inputs, names, n_bins, val_paths, n_boot, ci_level, seed, adaptive_rule, bands, device, out, as_json,
            quiet):
    """ECE, AECE, classwise and O-/U-ECE, NLL, Brier with CIs; reliability diagrams (FedLaS Tables 1, 4)."""
    from repanalysis.outputs import output_set
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.calibration import TABLE_HEADERS, calibrate_dumps, comparison_rows
    from repanalysis.analyze.confidence import confidence_dumps
    from repanalysis.plot.calibration import save_calibration_figures
    from repanalysis.report import format_table, write_json_atomic

    if bands and not n_boot:
        raise RepanalysisError("--bands draws bootstrap bands per bin; expected --bootstrap > 0")
    dumps = load_inputs(inputs, names)
    val_dumps = None
    if val_paths:
        if len(val_paths) != len(dumps):
            raise RepanalysisError(f"--fit-temperature was given {len(val_paths)} times for {len(dumps)} inputs; "
                                   "expected one validation Dump per input, in the same order")
        val_dumps = load_dumps(val_paths, ",".join(f"{d.name}-val" for d in dumps))
    dev = pick_device(device)
    results = calibrate_dumps(dumps, n_bins=n_bins, n_boot=n_boot, seed=seed, ci_level=ci_level,
                              adaptive_rule=adaptive_rule, val_dumps=val_dumps, device=dev, progress=not quiet)
    confidence = confidence_dumps(dumps, device=dev)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"n_bins": n_bins, "n_boot": n_boot, "ci_level": ci_level, "seed": seed,
               "adaptive_rule": adaptive_rule, "models": [r.to_dict() for r in results],
               "confidence": [c.to_dict() for c in confidence]}
    with output_set():                       # the JSON and the figures replace the last run's together
        write_json_atomic(out / "calibration.json", with_provenance(payload, [*dumps, *(val_dumps or [])]))
        written = save_calibration_figures(out, calibration=results, misclassification=confidence, bands=bands)
    if as_json:
        echo_json(payload)
    else:
        click.echo(format_table(comparison_rows(results), headers=TABLE_HEADERS))
        if n_boot:
            click.echo(f"[{100 * ci_level:g}% bootstrap intervals, {n_boot} resamples, seed {seed}]")
        auroc_rows = [{"model": c.name, **{k: v for k, v in c.auroc.items()}} for c in confidence]
        click.echo("\nAUROC, correct vs wrong predictions:")
        click.echo(format_table(auroc_rows, digits=4))
    for path in [out / "calibration.json", *written]:
        click.echo(f"wrote {path}", err=True)
