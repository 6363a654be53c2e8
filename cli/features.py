"""3-class projection of penultimate features (Müller et al. 2019; MaxSup Fig. 4-5, Appendix G).

Examples::

    repanalysis features --dump runs/ce/features --dump runs/ls/features --names CE,LS --classes four,seven,nine
    repanalysis features --checkpoint ce.pth --checkpoint ls.pth --data /data/imagenet/val \\
        --classes schipperke,saluki,grey_fox
    repanalysis features --classes auto          # the Dumps of the run folder, one panel per model

Writes projection_<method>.png/.pdf and projection_<method>_coords.csv (one row per projected sample) to --out.
"""
from __future__ import annotations

from pathlib import Path

import click

from repanalysis.cli.common import check_distinct_names, device_option, json_option, names_option, out_option
from repanalysis.errors import RepanalysisError


@click.command("features")
@click.option("--dump", "dumps", multiple=True, type=click.Path(path_type=Path),
              help="A Dump with features (repeatable: one panel per Dump).")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="A checkpoint (repeatable); its features are extracted into runs/<stem>/features/ when missing.")
@click.option("--data", default=None, help="Data set for --checkpoint (default: data.root from `repanalysis config`).")
@click.option("--layout", default=None, help="Data layout for --checkpoint (auto, imagefolder, imagenet-val, ...).")
@click.option("--split", default=None, help="Split for data sets that have several: train or test for CIFAR/MNIST (default test), a train/, val/ or test/ sub-folder, or <split>.npz.")
@names_option
@click.option("--classes", default="auto", show_default=True,
              help="Three classes: names (schipperke,saluki,grey_fox), WordNet ids or indices; 'auto' = the "
                   "triplet the models confuse most.")
@click.option("--samples-per-class", type=click.IntRange(1), default=80, show_default=True,
              help="Random samples per class (seeded).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--method", type=click.Choice(["template", "centroid"]), default="template", show_default=True,
              help="template: plane through the classifier rows [W_k, b_k]; centroid: SVD of the class means.")
@click.option("--decision-regions/--no-decision-regions", default=True, show_default=True,
              help="Shade the plane by the predicted class (template method).")
@device_option("Device for extraction and analysis: auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--overwrite", is_flag=True,
              help="Re-extract a --checkpoint's features even when its run folder has them.")
@out_option("repanalysis-out/features")
@json_option
def command(dumps, checkpoints, data, layout, split, names, classes, samples_per_class, seed, method,
            decision_regions, device, batch_size, overwrite, out, as_json):
    """3-class projection of penultimate features, one panel per model (MaxSup Figures 4-5)."""
    from repanalysis.outputs import output_set
    from repanalysis.analyze.projection import project_dumps
    from repanalysis.analyze.geometry import common_split
    from repanalysis.cli.common import echo_json
    from repanalysis.extract.gather import gather_dumps
    from repanalysis.plot.geometry import plot_projections
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_csv_atomic

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    resolved = [Path(p).expanduser().resolve() for p in (*dumps, *checkpoints)]
    if len(set(resolved)) < len(resolved):                       # before any extraction
        dup = next(r for r in resolved if resolved.count(r) > 1)
        raise RepanalysisError(f"{dup} is given twice; expected distinct Dumps / checkpoints")
    models = gather_dumps(dumps, checkpoints, names, data, layout=layout, split=split, device=device,
                          batch_size=batch_size, overwrite=overwrite, log=log)
    check_distinct_names([d.name for d in models], [d.path or d.name for d in models], from_names=bool(names))
    results = project_dumps(models, classes, method=method, samples_per_class=samples_per_class, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"projection_{method}"
    split_label = common_split(models)
    csv_path = out / f"projection_{method}_coords.csv"
    with output_set():                       # the figure and the coordinates replace the last run's together
        written = save_figure(plot_projections(results, decision_regions=decision_regions, split=split_label), stem)
        write_csv_atomic(csv_path, [row for r in results for row in r.to_rows()])
    rows = []
    for r in results:
        row = {"model": r.name, "method": r.method, "classes": ",".join(r.class_names), "points": len(r.labels)}
        if r.decision_weights is not None:
            row["3-class acc"] = float((r.predict(r.coords) == r.labels).mean())
        rows.append(row)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        click.echo(format_table(rows))
    for path in [*written, csv_path]:
        click.echo(f"wrote {path}", err=True)
