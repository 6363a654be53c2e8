"""Extract logits of a checkpoint: a seed-format .pt (when --output ends in .pt) or a Dump folder."""
from __future__ import annotations

import click

from repanalysis.cli import _extraction


@click.command("logits")
@_extraction.extraction_options
def command(**opts):
    """Extract logits (and labels) of a checkpoint on a data set.

    Writes {'logits': FloatTensor[N, K], 'labels': LongTensor[N]} when --output ends in .pt, else a Dump
    folder (default: runs/<checkpoint-stem>/logits/). Without --data, uses the configured data set.
    """
    _extraction.run("logits", opts, features=False)
