"""Extraction past one process: shards (extract --shard i/n), merge-dumps, and torchrun with gloo on the CPU.

Every comparison is against a single-process extraction of the same checkpoint and data, array by array and
bit for bit (shards are whole batches of the single run, so each batch holds the same images)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests._cli import run_cli

ARRAYS = ("logits", "features", "labels", "ids", "classifier_weight", "classifier_bias")
TIMING = {"created", "completed", "merged_from"}


def assert_same_dump(a, b):
    """Same arrays (exactly), same sample names, same meta apart from timing and the ranks recorded."""
    for key in ARRAYS:
        assert a.has(key) == b.has(key), key
        if a.has(key):
            x, y = np.asarray(a.array(key)), np.asarray(b.array(key))
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert np.array_equal(x, y), key
    assert a.sample_names() == b.sample_names()
    ma = {k: v for k, v in a.meta.items() if k not in TIMING}
    mb = {k: v for k, v in b.meta.items() if k not in TIMING}
    assert ma == mb


@pytest.fixture(scope="module")
def single(tmp_path_factory, real_checkpoints, real_data):
    """The single-process reference: CE checkpoint on the real test digits, batches of 64."""
    import repanalysis as ra

    out = tmp_path_factory.mktemp("single") / "dump"
    return ra.extract(real_checkpoints["CE"], real_data["test"], out, batch_size=64, workers=0, progress=False)


def _extract_shard(ckpt, data, out, i, n, **kw):
    import repanalysis as ra

    return ra.extract(ckpt, data, out, batch_size=64, workers=0, progress=False, shard=(i, n), **kw)


def test_shards_are_whole_batches_and_merge_into_the_single_run(tmp_path, real_checkpoints, real_data, single):
    from repanalysis.extract.merge import merge_dumps

    n = single.num_samples
    shards = [_extract_shard(real_checkpoints["CE"], real_data["test"], tmp_path / f"s{i}", i, 3) for i in range(3)]
    batches = -(-n // 64)
    starts = [s.meta["shard"]["start"] for s in shards]
    assert starts == [0, (batches // 3) * 64, (2 * batches // 3) * 64]          # whole batches, evenly shared
    assert [s.meta["shard"]["stop"] for s in shards] == [*starts[1:], n]
    assert sum(s.num_samples for s in shards) == n
    for s in shards:                                   # each shard holds the single run's rows, as they are
        lo = s.meta["shard"]["start"]
        assert np.array_equal(s.logits, single.logits[lo:lo + s.num_samples])
        assert np.array_equal(s.ids, np.arange(lo, lo + s.num_samples))
    merged = merge_dumps([shards[2].path, shards[0].path, shards[1].path], tmp_path / "merged")   # any order
    assert_same_dump(merged, single)
    assert [m["index"] for m in merged.meta["merged_from"]] == [0, 1, 2]
    # extract recognises the merged Dump as a complete Dump of this very run (a cache hit, nothing re-extracted)
    from repanalysis.extract.runner import extract_cached

    again, reused = extract_cached(real_checkpoints["CE"], real_data["test"], tmp_path / "merged", batch_size=64,
                                   workers=0, progress=False)
    assert reused and np.array_equal(again.features, single.features)


def test_merge_dumps_refuses_gaps_overlaps_other_runs_and_non_shards(tmp_path, capsys, real_checkpoints, real_data,
                                                                    single):
    ckpt, data = real_checkpoints["CE"], real_data["test"]
    s = [_extract_shard(ckpt, data, tmp_path / f"s{i}", i, 3).path for i in range(3)]
    half = _extract_shard(ckpt, data, tmp_path / "h1", 1, 2).path
    other = _extract_shard(real_checkpoints["LS"], data, tmp_path / "ls1", 1, 3).path
    lo1, hi1 = (json.loads((s[1] / "meta.json").read_text())["shard"][k] for k in ("start", "stop"))
    cases = [
        ([s[0], s[2]], rf"rows {lo1}-{hi1 - 1} are in no shard"),
        ([s[0], s[1], s[1], s[2]], rf"rows {lo1}-{hi1 - 1} are in both .*s1 and .*s1"),
        ([s[0], s[1], half], r"rows \d+-\d+ are in both .*s1 and .*h1"),
        ([s[0], other, s[2]], r"are not shards of one extraction: other checkpoint"),
        ([s[0], s[1], s[2], single.path], r"is not a shard"),
    ]
    for shards, pattern in cases:
        code, out, err = run_cli(["merge-dumps", *map(str, shards), "--output", str(tmp_path / "m")], capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1, err
        assert re.search(pattern, err), err
        assert not (tmp_path / "m").exists()                       # nothing half-written
    code, out, _ = run_cli(["info", str(s[1])], capsys)
    assert code == 0 and f"shard 1/3: rows {lo1}-{hi1 - 1} of {single.num_samples}" in out
    # an unfinished shard is named, with how to finish it
    _extract_shard(ckpt, data, tmp_path / "u2", 2, 3, max_batches=1)
    code, _, err = run_cli(["merge-dumps", str(s[0]), str(s[1]), str(tmp_path / "u2"), "--output",
                            str(tmp_path / "m")], capsys)
    assert code != 0 and "u2 is an incomplete Dump" in err and "resume" in err


@pytest.mark.parametrize("shard, pattern", [("2/2", "not of the form i/n"), ("1/0", "not of the form i/n"),
                                            ("a/b", "not of the form i/n"), ("0/40", "holds no rows")])
def test_bad_shard_arguments_are_one_line(tmp_path, capsys, real_checkpoints, real_data, shard, pattern):
    code, _, err = run_cli(["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                            "--output", str(tmp_path / "o"), "--shard", shard, "--quiet"], capsys)
    assert code != 0 and pattern in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_merge_interrupted_part_way_resumes(tmp_path, monkeypatch, real_checkpoints, real_data, single):
    from repanalysis.extract import merge
    from repanalysis.extract.store import DumpWriter

    shards = [_extract_shard(real_checkpoints["CE"], real_data["test"], tmp_path / f"s{i}", i, 2).path
              for i in range(2)]
    monkeypatch.setattr(merge, "_CHUNK_BYTES", 100 * 4 * (10 + 64 + 2))       # about 100 rows per chunk
    real_commit, calls = DumpWriter.commit, []

    def commit_then_die(self, done):
        real_commit(self, done)
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(DumpWriter, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        merge.merge_dumps(shards, tmp_path / "m")
    monkeypatch.setattr(DumpWriter, "commit", real_commit)
    logs = []
    merged = merge.merge_dumps(shards, tmp_path / "m", log=logs.append)
    assert logs and f"at row {calls[-1]} of {single.num_samples}" in logs[0]
    assert_same_dump(merged, single)


def test_merged_seed_pt_equals_the_single_runs(tmp_path, real_checkpoints, real_data, single):
    import torch

    from repanalysis.extract.merge import merge_dumps

    shards = [_extract_shard(real_checkpoints["CE"], real_data["test"], tmp_path / f"s{i}", i, 2).path
              for i in range(2)]
    merge_dumps(shards, tmp_path / "m.pt")
    got = torch.load(tmp_path / "m.pt", weights_only=True)
    assert torch.equal(got["logits"], torch.from_numpy(np.asarray(single.logits)))
    assert torch.equal(got["labels"], torch.from_numpy(np.asarray(single.labels)))
    assert not (tmp_path / "m.pt.partial").exists()


# --- torchrun, gloo, 2 processes on the CPU -------------------------------------------------------------------

def _torchrun(args, nproc=2):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "repanalysis", *args], capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_two_gloo_processes_equal_the_single_process_dump(tmp_path, real_checkpoints, real_data, single):
    import repanalysis as ra

    out = tmp_path / "tr"
    args = ["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]), "--output",
            str(out), "--batch-size", "64", "--workers", "0", "--quiet"]
    done = _torchrun(args)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = ra.load_dump(out)
    assert_same_dump(merged, single)
    ranks = merged.meta["merged_from"]
    assert [(r["index"], r["count"]) for r in ranks] == [(0, 2), (1, 2)]
    assert ranks[0]["stop"] == ranks[1]["start"] and ranks[1]["stop"] == single.num_samples
    assert not (tmp_path / "tr.shards").exists()                # the shards are merged and gone
    assert done.stdout.count("wrote ") == 1                     # rank 0 reports, once
    # the same command again: refused (one line per rank), the Dump untouched
    again = _torchrun(args)
    assert again.returncode != 0 and "error: output" in again.stderr and "already exists; pass --overwrite" in again.stderr
    assert "error: rank 0 failed" in again.stderr
    assert not re.search(r'File ".*repanalysis/', again.stderr)     # torchrun's launcher prints its own report
    assert_same_dump(ra.load_dump(out), single)


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_torchrun_resumes_the_shard_of_a_rank_that_died(tmp_path, real_checkpoints, real_data, single, overwrite):
    """A rank killed part-way leaves an incomplete shard with its committed rows (what extract leaves when
    interrupted: here stopped after two batches); the same command again resumes that shard, not restarts it."""
    import repanalysis as ra
    from repanalysis.extract.distributed import shards_folder

    out = tmp_path / "tr"
    shard1 = shards_folder(out) / "rank-1-of-2"
    partial = _extract_shard(real_checkpoints["CE"], real_data["test"], shard1, 1, 2, max_batches=2)
    assert not partial.complete and partial.num_samples == 128
    created = json.loads((shard1 / "meta.json").read_text())["created"]
    done = _torchrun(["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                      "--output", str(out), "--batch-size", "64", "--workers", "0", "--quiet", *overwrite])
    assert done.returncode == 0, done.stderr[-2000:]
    merged = ra.load_dump(out)
    assert_same_dump(merged, single)
    assert merged.meta["merged_from"][1]["created"] == created      # the killed rank's shard, continued
    # (with --overwrite too: it replaces the output, not the rows a rank of this same run already finished)


def test_shard_under_torchrun_is_refused(tmp_path, real_checkpoints, real_data):
    done = _torchrun(["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                      "--output", str(tmp_path / "o"), "--shard", "0/2", "--quiet"])
    assert done.returncode != 0 and "--shard was given under torchrun" in done.stderr
    assert not re.search(r'File ".*repanalysis/', done.stderr) and not (tmp_path / "o").exists()


def test_sigterm_from_torchrun_becomes_an_interrupt_that_commits(tmp_path):
    """torchrun stops the surviving ranks with SIGTERM: inside a rank it is a KeyboardInterrupt (so extract's
    finally commits the rows done), and the process's own handler is back afterwards."""
    import signal

    from repanalysis.extract.distributed import _sigterm_interrupts

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with _sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            import time
            time.sleep(5)                      # the signal arrives before this ends
    assert signal.getsignal(signal.SIGTERM) == before


def test_ranks_that_do_not_share_the_output_folder_are_told_so(tmp_path):
    from repanalysis.errors import DumpError
    from repanalysis.extract.distributed import _check_visible, _prepare, shards_folder

    out = tmp_path / "o"
    token = _prepare(out, shards_folder(out), overwrite=False)
    assert _check_visible(shards_folder(out), token) == token
    elsewhere = tmp_path / "another-node" / "o.shards"          # what a rank on a node without the folder sees
    with pytest.raises(DumpError, match="not visible here.*--shard i/n.*merge-dumps"):
        _check_visible(elsewhere, token)
    (out).mkdir()
    (out / "meta.json").write_text('{"format": "repanalysis-dump", "complete": true}')
    with pytest.raises(DumpError, match="already exists; pass --overwrite"):
        _prepare(out, shards_folder(out), overwrite=False)


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank among the launcher's descendants (read from /proc)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if f"RANK={rank}".encode() in env and parent == launcher_pid:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_a_rank_killed_with_sigkill_leaves_its_shard_to_the_next_run(tmp_path):
    """A real kill: torchrun on a ResNet-18 over 160 photos (a few seconds a rank), rank 1 SIGKILLed once it has
    committed rows; torchrun stops rank 0. The same command again resumes rank 1's shard and gives the
    single-process Dump."""
    import signal
    import time

    import repanalysis as ra
    from repanalysis.extract.distributed import shards_folder
    from repanalysis.models import registry

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "benchmarks"))
    from extract_speed import make_imagefolder

    make_imagefolder(tmp_path / "data", 160)
    torch = __import__("torch")
    torch.manual_seed(0)
    torch.save(registry.create_model("resnet18", 10).state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "tr"
    args = ["extract", "--checkpoint", str(tmp_path / "r18.pth"), "--arch", "resnet18", "--data",
            str(tmp_path / "data"), "--output", str(out), "--batch-size", "4", "--workers", "0", "--quiet"]
    env = {**os.environ}
    env.pop("WORLD_SIZE", None)
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", "-m", "repanalysis", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meta = shards_folder(out) / "rank-1-of-2" / "meta.json"
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and launcher.poll() is None:
            try:
                done = json.loads(meta.read_text())["progress"]["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done > 0:
                pid = _rank_pid(launcher.pid, 1)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed_at = done
                    break
            time.sleep(0.02)
        _, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert killed_at is not None and launcher.returncode != 0
    left = json.loads(meta.read_text())
    assert not left["complete"] and killed_at <= left["progress"]["done"] < left["num_samples"]
    assert not out.exists()                                          # nothing merged from a half-done run
    created = left["created"]
    again = _torchrun(args)
    assert again.returncode == 0, again.stderr[-2000:]
    merged = ra.load_dump(out)
    assert merged.meta["merged_from"][1]["created"] == created       # the killed rank's shard, continued
    single = ra.extract(tmp_path / "r18.pth", tmp_path / "data", tmp_path / "single", arch="resnet18",
                        batch_size=4, workers=0, progress=False)
    assert_same_dump(merged, single)
