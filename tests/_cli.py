"""Run the command line in-process for tests: (exit code, stdout, stderr)."""
from __future__ import annotations


def run_cli(argv, capsys):
    """Call ``repanalysis <argv>`` and return (exit code, stdout, stderr); a normal return is code 0."""
    from repanalysis.cli.main import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
