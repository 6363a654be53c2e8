"""Extract logits, penultimate features, labels and sample ids of a checkpoint into a Dump."""
from __future__ import annotations

import click

from repanalysis.cli import _extraction


@click.command("extract")
@_extraction.extraction_options
@click.option("--feature-layer", default=None, help="Record this layer's output instead of the classifier's input.")
@click.option("--feature-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
def command(feature_layer, feature_dtype, **opts):
    """Extract logits, penultimate features, labels and ids into a Dump.

    Default output: runs/<checkpoint-stem>/features/. An interrupted run resumes when re-run with the
    same arguments.
    """
    _extraction.run("features", opts, features=True, feature_layer=feature_layer, feature_dtype=feature_dtype)
