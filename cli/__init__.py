"""The `repanalysis` command. Each module here defines one sub-command as ``command`` (a click.Command).

This folder installs as ``repanalysis.cli`` (see pyproject's package-dir), never as a bare ``cli``.
"""
