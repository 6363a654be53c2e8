"""Class separation of penultimate features: d_within, d_total, R^2 per model, like MaxSup Table 2.

Example: ``repanalysis separation runs/ce/train runs/ce/val runs/ls/train runs/ls/val``. Dumps of the same
model (same name) and different splits share a row, with train and val columns side by side. Writes
separation.json and separation.png/.pdf (bars of d_within and R^2) to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import device_option, echo_json, json_option, load_inputs, names_option, out_option


@click.command("separation")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--chunk-size", type=click.IntRange(1), default=8192, show_default=True,
              help="Rows streamed at a time (memory stays bounded for ImageNet-train-sized Dumps).")
@device_option()
@out_option("repanalysis-out/separation")
@json_option
def command(inputs, names, chunk_size, device, out, as_json):
    """d_within, d_total and R^2 of penultimate features per model (MaxSup Table 2)."""
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.geometry import class_separation, separation_models, separation_table
    from repanalysis.plot.geometry import plot_separation_bars
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_json_atomic

    dumps = load_inputs(inputs, names, distinct=False, need_features=True)     # a train and a test Dump of one model share its name
    dev = pick_device(device)
    results = [class_separation(d, chunk_size=chunk_size, device=dev) for d in dumps]
    out.mkdir(parents=True, exist_ok=True)
    # each entry names its model as the table and the figure do, and the input it was computed from
    payload = [{**r.to_dict(), "model": model, "source": str(d.path) if d.path is not None else None}
               for r, model, d in zip(results, separation_models(results), dumps)]
    with output_set():                       # the JSON and the figure replace the last run's together
        write_json_atomic(out / "separation.json", with_provenance(payload, dumps))
        written = save_figure(plot_separation_bars(results)[0].figure, out / "separation")
    if as_json:
        echo_json(payload)
    else:
        click.echo(format_table(separation_table(results)))
    for path in [out / "separation.json", *written]:
        click.echo(f"wrote {path}", err=True)
