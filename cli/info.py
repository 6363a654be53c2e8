"""Summarise a Dump or seed .pt: N, K, D, accuracy and provenance."""
from __future__ import annotations

import click

from repanalysis.cli.common import echo_json, json_option


@click.command("info")
@click.argument("inputs", nargs=-1, required=True)
@json_option
def command(inputs, as_json):
    """Show N, K, D, accuracy and provenance of Dumps or seed .pt files."""
    from repanalysis.cli._extraction import HEADERS, summary_row
    from repanalysis.dump import load_dump
    from repanalysis.report import format_table

    rows, details = [], []
    for path in inputs:
        dump = load_dump(path, allow_incomplete=True)
        row = summary_row(dump)
        row["complete"] = dump.complete
        rows.append(row)
        m = dump.meta
        details.append({"path": str(path), **row, "arch": m.get("arch"), "checkpoint": m.get("checkpoint"),
                        "dataset": m.get("dataset"), "split": m.get("split"), "transform": m.get("transform"),
                        "created": m.get("created"), "tool_version": m.get("tool_version"),
                        "precision": m.get("precision"), "skipped": m.get("skipped"),
                        "nonfinite_logit_rows": m.get("nonfinite_logit_rows"), "shard": m.get("shard"),
                        "merged_from": m.get("merged_from"), "decode": m.get("decode"),
                        "has_classifier": dump.classifier_weight is not None})
    if as_json:
        echo_json(details)
        return
    columns = list(dict.fromkeys(c for r in rows for c in r))
    if "nonfinite" in columns:  # keep 'complete' last
        columns.remove("nonfinite")
        columns.insert(columns.index("accuracy") + 1, "nonfinite")
    click.echo(format_table(rows, columns, headers=HEADERS))
    for d in details:
        if d["arch"] is None:
            continue
        click.echo(f"\n{d['path']}: arch {d['arch']}, split {d['split']}, created {d['created']}, "
                   f"repanalysis {d['tool_version']}")
        ck = d["checkpoint"] or {}
        click.echo(f"  checkpoint {ck.get('path')} (sha256 {str(ck.get('sha256'))[:12]}...)")
        ds = d["dataset"] or {}
        click.echo(f"  data {ds.get('root')} ({ds.get('layout')}), classifier weights: "
                   f"{'yes' if d['has_classifier'] else 'no'}, skipped files: {len(d['skipped'] or [])}")
        if d["shard"]:
            sh = d["shard"]
            click.echo(f"  shard {sh.get('index')}/{sh.get('count')}: rows {sh.get('start')}-{sh.get('stop', 1) - 1} "
                       f"of {sh.get('total')} (join the shards with `repanalysis merge-dumps`)")
        if d["merged_from"]:
            click.echo(f"  merged from {len(d['merged_from'])} shards")
