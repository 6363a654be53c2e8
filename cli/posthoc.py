"""Post-hoc calibration: temperature scaling, vector scaling and histogram binning fitted on a validation Dump.

Example: ``repanalysis posthoc runs/ce_test runs/ls_test --val runs/ce_val --val runs/ls_val`` fits each
calibrator on the validation Dump of each model (``--val`` once per test Dump, in the same order, same model)
and prints the test metrics before ("none") and after each method in one table; posthoc.json goes to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import (device_option, echo_json, json_option, load_dumps, load_inputs, names_option,
                                    out_option)
from repanalysis.errors import RepanalysisError


@click.command("posthoc")
@click.argument("inputs", nargs=-1, metavar="[TEST_DUMP ...]")
@click.option("--val", "val_paths", multiple=True, metavar="VAL_DUMP", required=True,
              help="Validation Dump to fit the calibrators on; give it once per TEST_DUMP, in the same order.")
@names_option
@click.option("--methods", default="temperature,vector,histogram", show_default=True,
              help="Comma-separated calibrators: temperature, vector, histogram.")
@click.option("--bins", "n_bins", type=click.IntRange(min=1), default=15, show_default=True,
              help="Bins of the ECE and of histogram binning.")
@device_option()
@out_option("repanalysis-out/posthoc")
@json_option
def command(inputs, val_paths, names, methods, n_bins, device, out, as_json):
    """Vector scaling, histogram binning and temperature scaling: test calibration before and after."""
    from repanalysis.outputs import output_set
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.calibration.posthoc import POSTHOC_METHODS, posthoc_dumps
    from repanalysis.report import format_table, write_json_atomic

    dumps = load_inputs(inputs, names)
    if len(val_paths) != len(dumps):
        raise RepanalysisError(f"--val was given {len(val_paths)} times for {len(dumps)} inputs; expected one "
                               "validation Dump per input, in the same order")
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in method_list if m not in POSTHOC_METHODS]
    if bad or not method_list:
        raise RepanalysisError(f"--methods: unknown {bad}; expected some of {', '.join(POSTHOC_METHODS)}")
    val_dumps = load_dumps(val_paths, ",".join(f"{d.name}-val" for d in dumps))
    results = posthoc_dumps(val_dumps, dumps, names=[d.name for d in dumps], methods=method_list, n_bins=n_bins,
                            device=pick_device(device))
    out.mkdir(parents=True, exist_ok=True)
    payload = {"n_bins": n_bins, "methods": method_list, "models": [r.to_dict() for r in results]}
    with output_set():
        write_json_atomic(out / "posthoc.json", with_provenance(payload, [*dumps, *val_dumps]))
    if as_json:
        echo_json(payload)
    else:
        rows = []
        for r in results:
            for method, rep in r.reports.items():
                rows.append({"model": r.name, "method": method, "acc %": f"{100 * rep.accuracy:.2f}",
                             "ECE %": f"{100 * rep.ece:.2f}", "AECE %": f"{100 * rep.aece:.2f}",
                             "cwECE %": f"{100 * rep.classwise_ece:.2f}", "NLL": f"{rep.nll:.4f}",
                             "Brier": f"{rep.brier:.4f}"})
        click.echo(format_table(rows))
    click.echo(f"wrote {out / 'posthoc.json'}", err=True)
