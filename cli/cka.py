"""Representation similarity with linear CKA (Kornblith et al. 2019): every pair of models, or layer by layer.

Examples::

    repanalysis cka runs/ce/features runs/ls/features runs/maxsup/features --names CE,LS,MaxSup
    repanalysis cka A B --minibatch 1024          # minibatch CKA (Nguyen et al. 2021), seeded minibatches
    repanalysis cka --checkpoint ce.pth --checkpoint ls.pth --layers auto --data D --limit 5000

With Dumps: the CKA of the models' penultimate features on the same images (Dumps of different images are
refused); writes cka.json and the heatmap cka.png/.pdf. With --checkpoint (one, compared with itself, or two):
the CKA between every layer of the first and every layer of the second, each layer's output global-average-
pooled per channel; writes cka_layers.json and cka_layers.png/.pdf.
"""
from __future__ import annotations

from pathlib import Path

import click

from repanalysis.cli.common import (data_or_configured, default_workers, device_option, echo_json, json_option,
                                    load_inputs, names_option, out_option, split_names, transform_options,
                                    transform_overrides)
from repanalysis.errors import RepanalysisError


def _matrix_rows(matrix, rows, cols, first: str) -> list[dict]:
    return [{first: r, **{c: float(matrix[i][j]) for j, c in enumerate(cols)}} for i, r in enumerate(rows)]


@click.command("cka")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--minibatch", "minibatch", type=click.IntRange(4), default=None,
              help="Minibatch CKA with minibatches of this many rows (unbiased HSIC, Nguyen et al. 2021) instead "
                   "of the exact streamed value.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed of the minibatches' random order (--minibatch).")
@click.option("--chunk-size", type=click.IntRange(1), default=8192, show_default=True,
              help="Rows streamed at a time (exact method).")
@click.option("--precision", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Exact method: dtype of each chunk's products (accumulated in float64 either way); float32 is "
                   "faster, within ~1e-6 of the float64 value.")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="Compare layers of checkpoints instead of Dumps: give it once (a model against itself) or twice.")
@click.option("--layers", default=None,
              help="With --checkpoint: comma-separated layer names (e.g. layer1,layer2,layer3,layer4,fc) or auto "
                   "(the model's stages and its classifier). Default: auto.")
@click.option("--data", default=None,
              help="With --checkpoint: the images (data set folder or .npz). Default: configured.")
@click.option("--layout", default="auto", show_default=True, help="Data layout (see `repanalysis extract --help`).")
@click.option("--split", default=None, help="Split for data sets that have several.")
@click.option("--class-order", default=None, type=click.Path(path_type=Path),
              help="File of class ids/names, line i = the model's class i.")
@click.option("--limit", default=None, type=click.IntRange(1), help="With --checkpoint: only the first N images.")
@click.option("--arch", default=None, help="torchvision/timm architecture of the checkpoints (inferred if omitted).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="With --checkpoint: images per forward pass.")
@click.option("--workers", default=None, type=click.IntRange(0), help="DataLoader workers (default: cores - 1, max 8).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow pickled code / TorchScript checkpoints.")
@click.option("--ema", is_flag=True, help="Use each checkpoint's EMA weights.")
@transform_options
@device_option()
@out_option("repanalysis-out/cka")
@json_option
def command(inputs, names, minibatch, seed, chunk_size, precision, checkpoints, layers, data, layout, split,
            class_order, limit, arch, batch_size, workers, trust_checkpoint, ema, device, out, as_json,
            **transform_flags):
    """Linear CKA between models' features (heatmap), or between the layers of two checkpoints."""
    method = "linear" if minibatch is None else "minibatch"
    if checkpoints:
        if inputs:
            raise RepanalysisError("give Dumps (penultimate features of several models) or --checkpoint (layers of "
                                   "two models), not both")
        _layers_command(checkpoints, names, layers or "auto", data, layout, split, class_order, limit, arch,
                        batch_size, workers, trust_checkpoint, ema, device, out, as_json, method, minibatch, seed,
                        precision, transform_flags)
        return
    given = ", ".join(f"--{k.replace('_', '-')}" for k in transform_overrides(transform_flags))
    for flag, value in (("--layers", layers), ("--data", data), ("--limit", limit), (given, given or None)):
        if value is not None:
            raise RepanalysisError(f"{flag} goes with --checkpoint (layers of checkpoints); with Dumps, the "
                                   "penultimate features stored in them are compared")
    _dumps_command(inputs, names, method, minibatch, seed, chunk_size, precision, device, out, as_json)


def _dumps_command(inputs, names, method, minibatch, seed, chunk_size, precision, device, out, as_json):
    from repanalysis.analyze.cka import DEFAULT_BATCH, cka_matrix
    from repanalysis.arrays import pick_device
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.plot.cka import plot_cka_heatmap
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_json_atomic

    dumps = load_inputs(inputs, names, need_features=True)
    if len(dumps) < 2:
        raise RepanalysisError(f"cka compares models: got {len(dumps)} Dump(s); expected at least two Dumps of the "
                               "same images")
    result = cka_matrix(dumps, [d.name for d in dumps], method=method, batch_size=minibatch or DEFAULT_BATCH,
                        seed=seed, chunk_size=chunk_size, device=pick_device(device), precision=precision)
    payload = {**result.to_dict(), "sources": [str(d.path) if d.path is not None else None for d in dumps]}
    out.mkdir(parents=True, exist_ok=True)
    with output_set():                        # the JSON and the figure replace the last run's together
        write_json_atomic(out / "cka.json", with_provenance(payload, dumps))
        written = save_figure(plot_cka_heatmap(result).figure, out / "cka")
    if as_json:
        echo_json(payload)
    else:
        click.echo(f"linear CKA of penultimate features ({_how(result)})")
        click.echo(format_table(_matrix_rows(result.matrix, result.names, result.names, "model")))
    for path in [out / "cka.json", *written]:
        click.echo(f"wrote {path}", err=True)


def _how(result) -> str:
    if result.method == "minibatch":
        return (f"minibatch: {result.n_batches} minibatches of {result.batch_size} rows, seed {result.seed}, "
                f"{result.n:,} rows used")
    return f"exact, {result.n:,} rows"


def _layers_command(checkpoints, names, layers, data, layout, split, class_order, limit, arch, forward_batch,
                    workers, trust_checkpoint, ema, device, out, as_json, method, minibatch, seed, precision,
                    transform_flags):
    from repanalysis.analyze.cka import DEFAULT_BATCH, layer_cka_batches
    from repanalysis.arrays import pick_device
    from repanalysis.dump.provenance import checkpoint_inputs, with_provenance
    from repanalysis.extract.layers import POOLING, iter_layer_features
    from repanalysis.outputs import output_set
    from repanalysis.plot.cka import plot_layer_cka
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_json_atomic
    from repanalysis.text import display_text

    if len(checkpoints) > 2:
        raise RepanalysisError(f"--checkpoint was given {len(checkpoints)} times; the layer-by-layer CKA compares "
                               "two models (give it once to compare a model with itself)")
    checkpoints = list(checkpoints) * (2 if len(checkpoints) == 1 else 1)
    name_list = split_names(names)
    if name_list is not None and len(name_list) != 2 and not (len(name_list) == 1 and checkpoints[0] == checkpoints[1]):
        raise RepanalysisError(f"--names has {len(name_list)} names for two models; expected one name per checkpoint")
    if name_list is None:
        name_list = [display_text(Path(c).stem) for c in checkpoints]
    elif len(name_list) == 1:
        name_list = name_list * 2
    overrides = transform_overrides(transform_flags)
    data, layout, split, class_order = data_or_configured(data, layout, split, class_order)
    dev = pick_device(device)
    workers = default_workers(workers)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    batches = iter_layer_features(checkpoints, data, layers, arch=arch, limit=limit, batch_size=forward_batch,
                                  device=dev, seed=seed if method == "minibatch" else None, workers=workers,
                                  layout=layout, split=split, class_order=class_order, trust=trust_checkpoint,
                                  ema=ema, transform=overrides or None, log=log)
    result = layer_cka_batches(batches, names=tuple(name_list), method=method, batch_size=minibatch or DEFAULT_BATCH,
                               device=dev, precision=precision)
    if method == "minibatch":
        result.seed = seed
    result.pooling = POOLING
    payload = {**result.to_dict(), "checkpoints": [str(c) for c in checkpoints]}
    out.mkdir(parents=True, exist_ok=True)
    with output_set():
        write_json_atomic(out / "cka_layers.json", with_provenance(payload, inputs=checkpoint_inputs(
            checkpoints, name_list, data, overrides, ema)))
        written = save_figure(plot_layer_cka(result).figure, out / "cka_layers")
    if as_json:
        echo_json(payload)
    else:
        click.echo(f"linear CKA, layers of {result.model_a} (rows) vs {result.model_b} (columns) ({_how(result)}; "
                   "each layer's output averaged per channel over its spatial positions)")
        click.echo(format_table(_matrix_rows(result.matrix, result.layers_a, result.layers_b, "layer")))
    for path in [out / "cka_layers.json", *written]:
        click.echo(f"wrote {path}", err=True)
