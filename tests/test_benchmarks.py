"""Every script in benchmarks/ runs in its quick mode and its two sides agree.

Each benchmark compares our implementation with what a user would otherwise run and prints one line
``agree: <what> max|diff| = <value> <= <tolerance>`` when their values agree (it exits non-zero when they do
not). These tests run each script with ``--quick`` (small sizes, seconds) as a user would, in a subprocess,
and assert the exit status and that line: a benchmark that breaks (an API it uses changed, a Dump it writes is
refused) fails the suite instead of rotting until someone runs ``make bench``. Timings are never asserted.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("[!_]*.py"))
AGREE = re.compile(r"^agree: (?P<what>.+) max\|diff\| = (?P<diff>\S+) <= (?P<tol>\S+)$", re.MULTILINE)


def test_benchmarks_are_found():
    names = {p.stem for p in BENCHMARKS}
    assert {"calibration", "extract_speed", "gradcam_speed", "logit_stats", "separation", "cka", "compare_demo",
            "dynamics"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_quick_mode_runs_and_agrees(script, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "TMPDIR": str(tmp_path)}   # temporary Dumps land in tmp_path
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    shown = f"$ python {script.name} --quick (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, shown
    lines = AGREE.findall(proc.stdout)
    assert lines, f"no 'agree: ... max|diff| = ... <= ...' line\n{shown}"
    for m in AGREE.finditer(proc.stdout):
        assert float(m["diff"]) <= float(m["tol"]), shown
    assert "DISAGREE" not in proc.stdout, shown
