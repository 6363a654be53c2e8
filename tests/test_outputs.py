"""Result files as one set: every file of a run replaces the last run's, or none does."""
import pytest

from repanalysis.errors import DataError
from repanalysis.extract.store import write_json_atomic
from repanalysis.outputs import output_set


def test_a_failed_set_keeps_the_previous_files_and_leaves_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"run": 1})
    write_json_atomic(tmp_path / "b.json", {"run": 1})
    with pytest.raises(RuntimeError, match="figure failed"):
        with output_set():
            write_json_atomic(tmp_path / "a.json", {"run": 2})
            assert (tmp_path / "a.json").read_text().count("1") == 1      # not in place before the set ends
            raise RuntimeError("figure failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert '"run": 1' in (tmp_path / "a.json").read_text()


def test_a_set_puts_everything_in_place_at_its_end_and_removes_what_it_discards(tmp_path):
    write_json_atomic(tmp_path / "stale.json", {"run": 1})
    with output_set() as outer:
        with output_set() as inner:                # a set opened inside another joins it
            assert inner is outer
            write_json_atomic(tmp_path / "a.json", {"run": 2})
        assert not (tmp_path / "a.json").exists()   # the inner block's end is not the set's end
        outer.discard(tmp_path / "stale.json", tmp_path / "never-there.json")
        write_json_atomic(tmp_path / "b.json", {"run": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_a_folder_in_the_way_at_commit_time_replaces_nothing(tmp_path):
    # the renames happen at the end: a folder standing where the second file goes is found before the first
    # rename, so the first file keeps the last run's content
    write_json_atomic(tmp_path / "a.json", {"run": 1})
    with pytest.raises(DataError, match=r"cannot write .*b.json: a folder of that name is in the way"):
        with output_set():
            write_json_atomic(tmp_path / "a.json", {"run": 2})
            write_json_atomic(tmp_path / "b.json", {"run": 2})
            (tmp_path / "b.json").mkdir()
    assert '"run": 1' in (tmp_path / "a.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]      # no temporary file left


def test_an_inner_set_that_fails_is_dropped_even_when_its_error_is_caught(tmp_path):
    with output_set():
        write_json_atomic(tmp_path / "kept.json", {"run": 2})
        try:
            with output_set():
                write_json_atomic(tmp_path / "half.json", {"run": 2})
                raise RuntimeError("second figure failed")
        except RuntimeError:
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json"]


def test_a_dumps_meta_json_is_in_place_at_once_inside_a_set(tmp_path):
    # an extraction run inside a caller's set must still leave a readable Dump (its meta.json is not a result)
    import torch

    from repanalysis.extract.store import Dump, load_dump

    with output_set():
        Dump.from_arrays(torch.zeros(4, 3), torch.arange(4) % 3, name="d").save(tmp_path / "d")
        assert load_dump(tmp_path / "d").num_samples == 4


def test_a_later_run_removes_the_temporary_files_of_a_killed_run(tmp_path):
    # kill -9 during a write leaves `.<name>.<host>.<pid>-<random>` files no cleanup ran for; the next run that
    # writes the same file removes them, but never those of a process still running (a concurrent writer)
    import subprocess
    import sys

    from matplotlib.figure import Figure

    from repanalysis.outputs import _host_tag
    from repanalysis.plot.style import save_figure

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tag = _host_tag()
        left = [tmp_path / f".r.json.{tag}.{dead_pid}-abc123xy.tmp",
                tmp_path / f".fig.png.{tag}.{dead_pid}-x9x9x9x9.png",
                tmp_path / f".fig.pdf.{tag}.{dead_pid}-x9x9x9x9.pdf"]
        running = tmp_path / f".r.json.{tag}.{live.pid}-def456gh.tmp"
        kept = [tmp_path / f".other.json.{tag}.{dead_pid}-qqqqqqqq.tmp",   # another target's: not this run's
                tmp_path / f".r.json.abcdef.{dead_pid}-abc123xy.tmp",      # another host or PID namespace
                tmp_path / f".r.json.{dead_pid}-userbackup",               # a user's file of another shape
                tmp_path / f".r.json.{tag}.99999999999999999999-abc123xy.tmp"]   # no such pid: kept, no crash
        for p in (*left, running, *kept):
            p.write_text("partial")
        with output_set():
            write_json_atomic(tmp_path / "r.json", {"run": 2})
            save_figure(Figure(), tmp_path / "fig")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["r.json", "fig.png", "fig.pdf", running.name, *(p.name for p in kept)])
    finally:
        live.kill()
        live.wait()


def test_a_demo_step_that_fails_part_way_keeps_the_last_runs_files(tmp_path, monkeypatch):
    # the demo's steps write as one set each: killed or failing in its third figure, the step's folder holds the
    # previous run's files only, never a mix of two runs
    import types

    import repanalysis.demo as demo
    from matplotlib.figure import Figure

    from repanalysis.plot.style import save_figure

    out = tmp_path / "geometry"

    def run(ctx, size, fail=False):
        out.mkdir(exist_ok=True)
        write_json_atomic(out / "separation.json", {"size": size})
        save_figure(Figure(figsize=(size, size)), out / "separation")
        if fail:
            raise KeyboardInterrupt
        save_figure(Figure(figsize=(size, size)), out / "collapse")

    step = types.ModuleType("repanalysis.demo.steps.geometry")
    monkeypatch.setattr(demo, "discover_steps", lambda: [step])
    ctx = demo.DemoContext(out=tmp_path, checkpoints={}, dumps={}, data={}, class_names=None, device="cpu",
                           log=lambda m: None)
    step.run = lambda c: run(c, 2)
    demo.run_steps(ctx)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["collapse.pdf", "collapse.png", "separation.json", "separation.pdf", "separation.png"]
    step.run = lambda c: run(c, 3, fail=True)
    with pytest.raises(KeyboardInterrupt):
        demo.run_steps(ctx)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
