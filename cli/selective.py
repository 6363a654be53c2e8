"""Selective prediction: risk-coverage curves, AURC and E-AURC of max softmax, max logit and feature norm.

Example: ``repanalysis selective runs/ce runs/ls runs/maxsup --names CE,LS,MaxSup`` prints one row per model
and score (AURC and E-AURC in per mille, the top-1 error rate in %) and writes selective.json and the
risk_coverage figure to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import device_option, echo_json, json_option, load_inputs, names_option, out_option


@click.command("selective")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--curves", is_flag=True, help="Also write the risk at every coverage into selective.json.")
@device_option()
@out_option("repanalysis-out/selective")
@json_option
def command(inputs, names, curves, device, out, as_json):
    """Risk-coverage curves, AURC and E-AURC (Geifman & El-Yaniv 2017; Geifman et al. 2019)."""
    from repanalysis.outputs import output_set
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.selective import selective_dumps
    from repanalysis.plot.selective import save_selective_figures
    from repanalysis.report import format_table, write_json_atomic

    dumps = load_inputs(inputs, names)
    results = selective_dumps(dumps, device=pick_device(device))
    out.mkdir(parents=True, exist_ok=True)
    payload = {"aurc_convention": "mean selective risk over coverages k/N, k = 1..N; tied scores averaged",
               "models": [r.to_dict(curves=curves) for r in results]}
    with output_set():                       # the JSON and the figure replace the last run's together
        write_json_atomic(out / "selective.json", with_provenance(payload, dumps))
        written = save_selective_figures(out, results)
    if as_json:
        echo_json(payload)
    else:
        rows = [{"model": r.name, "score": s, "N": r.num_samples, "error %": f"{100 * r.error_rate:.2f}",
                 "AURC ‰": f"{1000 * r.aurc[s]:.2f}", "E-AURC ‰": f"{1000 * r.eaurc[s]:.2f}"}
                for r in results for s in r.aurc]
        click.echo(format_table(rows))
    for path in [out / "selective.json", *written]:
        click.echo(f"wrote {path}", err=True)
