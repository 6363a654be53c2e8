"""Join the shards of one extraction (``extract --shard i/n`` on several machines) into one Dump."""
from __future__ import annotations

from pathlib import Path

import click

from repanalysis.cli.common import quiet_option


@click.command("merge-dumps")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="SHARD...")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="The merged Dump folder (or a .pt).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--remove-shards", is_flag=True, help="Delete the shard folders once the merged Dump is complete.")
@quiet_option
def command(shards, output, overwrite, remove_shards, quiet):
    """Merge shard Dumps of one extraction into the Dump a single run gives.

    The shards must come from one checkpoint, data set and transform and cover every row once: gaps and
    overlaps are refused, naming the rows. An interrupted merge resumes when re-run.
    """
    from repanalysis.cli._extraction import HEADERS, summary_row
    from repanalysis.extract.merge import merge_dumps
    from repanalysis.report import format_table

    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    dump = merge_dumps(list(shards), output, overwrite=overwrite, remove_shards=remove_shards, log=log)
    click.echo(format_table([summary_row(dump)], headers=HEADERS))
    click.echo(f"wrote {output}")
