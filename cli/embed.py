"""UMAP or t-SNE of the penultimate features of chosen classes, one panel per model (seeded).

Example: ``repanalysis embed runs/ce/val runs/ls/val --names CE,LS --classes four,seven,nine --method tsne``.
Writes embedding_<method>.png/.pdf and embedding_<method>_coords.csv to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import echo_json, json_option, load_inputs, names_option, out_option, quiet_option
from repanalysis.errors import RepanalysisError

MAX_DEFAULT_CLASSES = 20


@click.command("embed")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--classes", default=None,
              help="Classes to embed: names, WordNet ids or indices (comma-separated), or 'auto' (the most "
                   f"confused triplet). Default: all classes when there are at most {MAX_DEFAULT_CLASSES}.")
@click.option("--method", type=click.Choice(["umap", "tsne"]), default="umap", show_default=True)
@click.option("--samples-per-class", type=click.IntRange(1), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True)
@out_option("repanalysis-out/embed")
@json_option
@quiet_option
def command(inputs, names, classes, method, samples_per_class, seed, metric, out, as_json, quiet):
    """UMAP / t-SNE scatter of penultimate features per model."""
    from repanalysis.outputs import output_set
    from repanalysis.analyze.embed import embed_dumps
    from repanalysis.analyze.geometry import common_split
    from repanalysis.report import write_csv_atomic
    from repanalysis.plot.geometry import plot_embeddings
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table

    dumps = load_inputs(inputs, names, need_features=True)
    if classes is None:
        k = dumps[0].num_classes
        if k > MAX_DEFAULT_CLASSES:
            raise RepanalysisError(f"the model has {k} classes; choose some with --classes a,b,c (or --classes auto)")
    results = embed_dumps(dumps, classes, method=method, samples_per_class=samples_per_class, seed=seed,
                          metric=metric, progress=not quiet)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"embedding_{method}_coords.csv"
    with output_set():                       # the figure and the coordinates replace the last run's together
        written = save_figure(plot_embeddings(results, split=common_split(dumps)), out / f"embedding_{method}")
        write_csv_atomic(csv_path, [row for r in results for row in r.to_rows()])
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        click.echo(format_table([{"model": r.name, "method": r.method, "classes": len(r.classes),
                                  "points": len(r.labels)} for r in results]))
    for path in [*written, csv_path]:
        click.echo(f"wrote {path}", err=True)
