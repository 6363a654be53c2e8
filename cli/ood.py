"""Out-of-distribution detection: AUROC and FPR at 95% TPR of max softmax, max logit, energy, feature L1 norm.

Example: ``repanalysis ood --in runs/ce/test --ood runs/ce/svhn --in runs/ls/test --ood runs/ls/svhn
--names CE,LS`` prints one row per model and score and writes ood.json and ood_roc.png/.pdf to --out.
Give --in and --ood once per model (same model in each pair, in the same order). With --train (the model's
in-distribution training Dump, once per model in the same order) the feature scores are added: Mahalanobis,
relative Mahalanobis, KNN (--knn-k), ViM (--vim-dim) and ReAct energy (--react-percentile).
"""
from __future__ import annotations

import click

from repanalysis.cli.common import device_option, echo_json, json_option, load_dumps, names_option, out_option
from repanalysis.errors import RepanalysisError


@click.command("ood")
@click.option("--in", "in_paths", multiple=True, required=True, metavar="DUMP",
              help="In-distribution Dump (or seed .pt) of a model; repeat once per model.")
@click.option("--ood", "ood_paths", multiple=True, required=True, metavar="DUMP",
              help="Out-of-distribution Dump of the same model; repeat once per model, same order as --in.")
@click.option("--train", "train_paths", multiple=True, metavar="DUMP",
              help="In-distribution TRAIN Dump of the same model (features, labels, classifier); repeat once per "
                   "model, same order as --in. Adds mahalanobis, relative_mahalanobis, knn, vim, react_energy.")
@click.option("--knn-k", type=int, default=50, show_default=True, help="KNN score: the k-th nearest neighbour.")
@click.option("--vim-dim", type=int, default=None,
              help="ViM principal dimension [default: the paper's rule: 1000 if D >= 1500, 512 if D >= 768, "
                   "else D/2].")
@click.option("--react-percentile", type=float, default=90, show_default=True,
              help="ReAct: clip activations at this percentile of the training activations.")
@names_option
@device_option()
@out_option("repanalysis-out/ood")
@json_option
def command(in_paths, ood_paths, train_paths, knn_k, vim_dim, react_percentile, names, device, out, as_json):
    """OOD AUROC, AUPR-in/out and FPR@95%TPR of max softmax, max logit, energy and feature L1 norm (FedLaS
    Table 3); with --train also of Mahalanobis, relative Mahalanobis, KNN, ViM and ReAct energy."""
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.arrays import pick_device
    from repanalysis.analyze.confidence import ood_dumps
    from repanalysis.plot.calibration import save_calibration_figures
    from repanalysis.report import format_table, write_json_atomic

    if len(in_paths) != len(ood_paths):
        raise RepanalysisError(f"{len(in_paths)} --in but {len(ood_paths)} --ood dumps; expected one OOD Dump "
                               "per in-distribution Dump")
    ins = load_dumps(in_paths, names)
    oods = load_dumps(ood_paths, ",".join(d.name for d in ins))
    if train_paths and len(train_paths) != len(in_paths):
        raise RepanalysisError(f"{len(train_paths)} --train but {len(in_paths)} --in dumps; expected one train Dump "
                               "per model")
    results = ood_dumps(ins, oods, device=pick_device(device))
    trains = []
    if train_paths:
        from repanalysis.analyze.ood_features import merge_ood_results, ood_feature_dumps

        trains = load_dumps(train_paths, ",".join(d.name for d in ins))
        feats = ood_feature_dumps(trains, ins, oods, knn_k=knn_k, vim_dim=vim_dim,
                                  react_percentile=react_percentile, device=pick_device(device))
        results = [merge_ood_results(r, f) for r, f in zip(results, feats)]
    out.mkdir(parents=True, exist_ok=True)
    payload = {"models": [r.to_dict() for r in results]}
    with output_set():                       # the JSON and the figure replace the last run's together
        write_json_atomic(out / "ood.json", with_provenance(payload, [*ins, *oods, *trains]))
        written = save_calibration_figures(out, ood=results)
    if as_json:
        echo_json(payload)
    else:
        rows = [{"model": r.name, "score": k, "AUROC": r.auroc[k], "AUPR-in": r.aupr_in.get(k),
                 "AUPR-out": r.aupr_out.get(k), "FPR@95%TPR": r.fpr_at_95_tpr[k], "N in": r.num_in,
                 "N ood": r.num_ood} for r in results for k in r.auroc]
        click.echo(format_table(rows))
    for path in [out / "ood.json", *written]:
        click.echo(f"wrote {path}", err=True)
