"""Neural collapse (NC1-NC4, Papyan et al. 2020), variability collapse (VCI, Xu & Liu 2023) and feature norms.

Example: ``repanalysis collapse runs/ce/train runs/ls/train --names CE,LS``. Prints one row per model and
writes collapse.json (with per-class L1/L2 feature-norm statistics) to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import device_option, echo_json, json_option, load_inputs, names_option, out_option


@click.command("collapse")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--vci-total", type=click.Choice(["sample", "balanced"]), default="sample", show_default=True,
              help="Total covariance S_T in VCI = 1 - Tr(S_T^+ S_B)/rank(S_B) (Xu & Liu 2023): sample, the sample "
              "total covariance of the features; balanced, S_W + S_B (equal on balanced classes only).")
@device_option()
@out_option("repanalysis-out/collapse")
@json_option
def command(inputs, names, vci_total, device, out, as_json):
    """Neural-collapse metrics NC1-NC4, VCI and per-class feature norms of each Dump."""
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.analyze.collapse import neural_collapse
    from repanalysis.analyze.geometry import common_split
    from repanalysis.plot.geometry import plot_feature_norms
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_json_atomic

    dumps = load_inputs(inputs, names, need_features=True)
    results = [neural_collapse(d, device=device, vci_total=vci_total) for d in dumps]
    out.mkdir(parents=True, exist_ok=True)
    payload = [r.to_dict() for r in results]
    with output_set():                       # the JSON and the figure replace the last run's together
        write_json_atomic(out / "collapse.json", with_provenance(payload, dumps))
        written = save_figure(plot_feature_norms(results, class_names=dumps[0].class_names,
                                                 split=common_split(dumps)).figure, out / "feature_norms")
    if as_json:
        echo_json(payload)
    else:
        click.echo(format_table([r.summary() for r in results]))
    for path in [out / "collapse.json", *written]:
        click.echo(f"wrote {path}", err=True)
