"""Linear transfer (MaxSup Table 3): a linear probe on frozen features of a downstream train/test Dump pair.

Example: ``repanalysis transfer --train runs/ce/cifar_train --test runs/ce/cifar_test --train runs/ls/cifar_train
--test runs/ls/cifar_test --names CE,LS``. One row per model; writes transfer.json to --out.
"""
from __future__ import annotations

from pathlib import Path

import click

from repanalysis.cli.common import (device_option, echo_json, json_option, load_dumps, out_option, quiet_option,
                                    split_names)
from repanalysis.errors import RepanalysisError


@click.command("transfer")
@click.option("--train", "train", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Dump of the downstream train set (repeatable, one per model).")
@click.option("--test", "test", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Dump of the downstream test set (repeatable, in the same order as --train).")
@click.option("--names", default=None, help="Comma-separated display names, one per --train/--test pair.")
@click.option("--l2", type=float, default=None,
              help="L2 strength of the probe (default: chosen on 20% of the train set from 1e-6..1e-1).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option()
@out_option("repanalysis-out/transfer")
@json_option
@quiet_option
def command(train, test, names, l2, seed, device, out, as_json, quiet):
    """Linear-probe accuracy of frozen penultimate features on a downstream task."""
    from repanalysis.analyze.transfer import probe_dumps
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.report import format_table, write_json_atomic

    if len(train) != len(test):
        raise RepanalysisError(f"got {len(train)} --train and {len(test)} --test Dumps; expected one pair per model")
    name_list = split_names(names)
    if name_list is not None and len(name_list) != len(train):
        raise RepanalysisError(f"--names has {len(name_list)} names for {len(train)} models; expected one name per "
                               "--train/--test pair")
    trains, tests = load_dumps([str(p) for p in train]), load_dumps([str(p) for p in test])
    results = []
    for i, (tr, te) in enumerate(zip(trains, tests)):
        name = name_list[i] if name_list else tr.name
        results.append(probe_dumps(tr, te, l2=l2, seed=seed, device=device, name=name, progress=not quiet))
    out.mkdir(parents=True, exist_ok=True)
    payload = [r.to_dict() for r in results]
    write_json_atomic(out / "transfer.json", with_provenance(payload, [*trains, *tests]))
    if as_json:
        echo_json(payload)
    else:
        click.echo(format_table([{"model": r.name, "test acc": r.test_accuracy, "train acc": r.train_accuracy,
                                  "test NLL": r.test_nll, "l2": f"{r.l2:g}", "N train": r.n_train,
                                  "N test": r.n_test, "device": r.device} for r in results]))
    click.echo(f"wrote {out / 'transfer.json'}", err=True)
