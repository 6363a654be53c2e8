"""Bad input shared by the analysis commands: devices, usage errors, Dumps of different models or data sets,
demo steps, strict JSON, non-finite classifiers and options."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import repanalysis  # noqa: F401
from repanalysis.analyze import calibration as C
from repanalysis.arrays import pick_device
from repanalysis.analyze.projection import project_classes
from repanalysis.analyze.transfer import linear_probe, probe_dumps
from repanalysis.errors import DataError, DumpError, RepanalysisError
from repanalysis.extract.store import Dump, json_text, write_json_atomic

from _cli import run_cli


def one_line_error(code, stderr, *needles):
    assert code == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    for needle in needles:
        assert needle in stderr, stderr


def dump_of(checkpoint_sha: str | None, root: str = "/data/a", seed: int = 0, n: int = 60, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    meta = {"dataset": {"root": root, "split": None}}
    if checkpoint_sha:
        meta["checkpoint"] = {"path": f"/ck/{checkpoint_sha}.pth", "sha256": checkpoint_sha * 8}
    return Dump.from_arrays(torch.randn(n, k, generator=g), torch.arange(n) % k,
                            features=torch.rand(n, 4, generator=g) + 0.1, name=checkpoint_sha or "x", meta=meta)


# --- devices -------------------------------------------------------------------------------------------
def test_pick_device_names_what_is_wrong():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DataError, match="unknown device 'tpu'; expected auto, cpu, cuda or cuda:N"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DataError, match="no CUDA device is available"):
            pick_device("cuda")
    else:
        with pytest.raises(DataError, match="does not exist"):
            pick_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("command", ["calibration", "analyze-logits", "separation", "collapse"])
def test_bad_device_is_one_line_before_any_work(command, tmp_path, capsys):
    path = tmp_path / "d"
    dump_of("aa").save(path)
    code, _, stderr = run_cli([command, str(path), "--device", "tpu", "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, stderr, "unknown device 'tpu'")
    assert not (tmp_path / "o").exists()


def test_demo_checks_steps_and_device_before_training(tmp_path, capsys):
    code, _, stderr = run_cli(["demo", "--only", "logits,bogus", "--out", str(tmp_path / "d")], capsys)
    one_line_error(code, stderr, "unknown demo step(s) bogus", "logits, geometry, calibration, gradcam")
    code, _, stderr = run_cli(["demo", "--device", "npu", "--out", str(tmp_path / "d")], capsys)
    one_line_error(code, stderr, "unknown device 'npu'")
    for only in ("", "logits,"):                          # named as --only, not --names
        code, _, stderr = run_cli(["demo", "--only", only, "--out", str(tmp_path / "d")], capsys)
        one_line_error(code, stderr, f"--only {only!r} has an empty entry; expected some of logits, geometry, "
                       "calibration, gradcam")
    assert not (tmp_path / "d").exists()                   # nothing trained, nothing written


# --- usage errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["calibration", "--bins", "0", "x"], "Invalid value for '--bins'"),
    (["ood", "--in", "x"], "Missing option '--ood'"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_usage_errors_are_one_line(argv, needle, capsys):
    code, _, stderr = run_cli(argv, capsys)
    one_line_error(code, stderr, needle, "--help')")


def test_bare_command_lists_the_sub_commands_and_debug_works_after_a_sub_command(tmp_path, capsys):
    code, stdout, stderr = run_cli([], capsys)
    assert code == 0 and stderr == ""
    assert stdout.startswith("Usage: repanalysis") and "calibration" in stdout and "separation" in stdout
    code, _, stderr = run_cli(["info", str(tmp_path / "missing")], capsys)
    one_line_error(code, stderr, "no such dump")
    with pytest.raises(DumpError, match="no such dump"):      # --debug after the sub-command: the traceback
        run_cli(["info", str(tmp_path / "missing"), "--debug"], capsys)



def test_info_json_gives_no_feature_width_as_null(tmp_path, capsys):
    Dump.from_arrays(torch.randn(5, 3), torch.arange(5) % 3, name="z").save(tmp_path / "z.pt")
    code, stdout, stderr = run_cli(["info", str(tmp_path / "z.pt"), "--json"], capsys)
    assert code == 0, stderr
    (row,) = json.loads(stdout)
    assert (row["N"], row["K"], row["D"]) == (5, 3, None)


# --- Dumps that must come from one model ---------------------------------------------------------------
def test_ood_refuses_dumps_of_different_checkpoints(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    dump_of("aa").save(a)
    dump_of("bb", seed=1).save(b)
    code, _, stderr = run_cli(["ood", "--in", str(a), "--ood", str(b), "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, stderr, "expected two Dumps of the same model", "aaaaaaaaaaaa", "bbbbbbbbbbbb")
    dump_of("aa", seed=2).save(tmp_path / "a_ood")                # same checkpoint: fine
    code, _, stderr = run_cli(["ood", "--in", str(a), "--ood", str(tmp_path / "a_ood"), "--out",
                               str(tmp_path / "o")], capsys)
    assert code == 0, stderr


def test_temperature_and_probe_refuse_dumps_of_different_checkpoints():
    test, val_other, val_same = dump_of("aa"), dump_of("bb", seed=1), dump_of("aa", seed=2)
    with pytest.raises(DataError, match="--fit-temperature.*same model"):
        C.calibrate_dumps([test], val_dumps=[val_other])
    res = C.calibrate_dumps([test], val_dumps=[val_same])
    assert [r.name for r in res] == ["aa", "aa +TS"]
    with pytest.raises(DataError, match="--train/--test.*same model"):
        probe_dumps(test, val_other, l2=1e-3)
    # Dumps that do not record their checkpoint (arrays, seed .pt) cannot be checked and are accepted
    assert probe_dumps(dump_of(None), dump_of(None, seed=1), l2=1e-3).n_test == 60


@pytest.mark.parametrize("l2", [float("nan"), float("inf"), -1.0])
def test_probe_l2_must_be_finite_and_non_negative(l2):
    d = dump_of(None)
    with pytest.raises(DataError, match="l2 strength must be a finite number >= 0"):
        linear_probe(d.features, d.labels, d.features, d.labels, l2=l2)
    with pytest.raises(DataError, match="l2 strength must be a finite number >= 0"):
        linear_probe(d.features, d.labels, d.features, d.labels, l2_grid=(1e-3, l2))


def test_single_class_validation_set_warns():
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="every validation label is 2"):
        C.fit_temperature(z, torch.full((50,), 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.fit_temperature(z, torch.arange(50) % 3)


# --- run folders of different data sets ---------------------------------------------------------------
def run_folder(tmp_path, monkeypatch, second_data: str):
    """runs/ce and runs/ls features Dumps of test.npz and ``second_data``, as the configured run folder."""
    runs = tmp_path / "runs"
    dump_of("aa", root=str(tmp_path / "test.npz")).save(runs / "ce" / "features")
    dump_of("bb", root=str(tmp_path / second_data), seed=1).save(runs / "ls" / "features")
    monkeypatch.setenv("REPANALYSIS_RUNS", str(runs))
    monkeypatch.setenv("REPANALYSIS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("REPANALYSIS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    return runs


def test_run_folder_dumps_of_different_data_sets_are_not_mixed(tmp_path, capsys, monkeypatch):
    runs = run_folder(tmp_path, monkeypatch, "train.npz")
    out = tmp_path / "o"
    code, _, stderr = run_cli(["features", "--classes", "0,1,2", "--method", "centroid", "--out", str(out)], capsys)
    one_line_error(code, stderr, "different data sets", "test.npz", "train.npz")
    # naming one of them: the other run's Dump is not of it
    code, _, stderr = run_cli(["features", "--classes", "0,1,2", "--method", "centroid", "--data",
                               str(tmp_path / "test.npz"), "--out", str(out)], capsys)
    one_line_error(code, stderr, "not all of the data set")
    assert not out.exists()
    dump_of("bb", root=str(tmp_path / "test.npz"), seed=1).save(runs / "ls" / "features", overwrite=True)
    code, stdout, stderr = run_cli(["features", "--classes", "0,1,2", "--method", "centroid", "--out", str(out)],
                                   capsys)
    assert code == 0, stderr


def _results(path):
    """A result JSON without its provenance (when it was written, the command line and input paths differ)."""
    payload = json.loads(path.read_text())
    assert payload.pop("provenance")["tool"] == "repanalysis"
    return payload


@pytest.mark.parametrize("command, out_file", [("calibration", "calibration.json"),
                                               ("analyze-logits", "logit_stats.json"),
                                               ("separation", "separation.json"), ("collapse", "collapse.json")])
def test_analysis_commands_without_inputs_take_the_run_folder(command, out_file, tmp_path, capsys, monkeypatch):
    runs = run_folder(tmp_path, monkeypatch, "test.npz")
    extra = ["--bootstrap", "0"] if command == "calibration" else []
    code, _, stderr = run_cli([command, *extra, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, stderr
    explicit = [str(runs / "ce" / "features"), str(runs / "ls" / "features")]
    code, _, stderr = run_cli([command, *explicit, "--names", "ce,ls", *extra, "--out", str(tmp_path / "b")], capsys)
    assert code == 0, stderr
    got, want = (_results(tmp_path / o / out_file) for o in "ab")
    assert got == want and "ce" in json.dumps(got) and "ls" in json.dumps(got)
    code, _, stderr = run_cli([command, *extra, "--names", "A,A", "--out", str(tmp_path / "d")], capsys)
    one_line_error(code, stderr, "--names gives 'A' twice")
    # a run with logits only: left out, with a warning naming it, by the commands that need features
    Dump.from_arrays(torch.randn(60, 3), torch.arange(60) % 3, name="lo",
                     meta={"dataset": {"root": str(tmp_path / "test.npz"), "split": None}}).save(runs / "lo" / "logits")
    if command in ("separation", "collapse"):
        with pytest.warns(RuntimeWarning, match=r"run\(s\) lo have no complete features Dump and are left out"):
            code, _, stderr = run_cli([command, *extra, "--out", str(tmp_path / "e")], capsys)
        assert code == 0 and _results(tmp_path / "e" / out_file) == want
    # a third run of another data set is not mixed in
    dump_of("cc", root=str(tmp_path / "train.npz"), seed=2).save(runs / "ms" / "features")
    code, _, stderr = run_cli([command, *extra, "--out", str(tmp_path / "c")], capsys)
    one_line_error(code, stderr, "different data sets", "train.npz")


# --- strict JSON ------------------------------------------------------------------------------------------
def test_json_output_is_strict_with_nan_as_null(tmp_path):
    obj = {"nc3": float("nan"), "per_class": np.array([1.5, np.inf, -np.inf]), "n": np.int64(3),
           "x": np.float32(0.25), "nested": [{"v": np.float64("nan")}]}
    def refuse(constant):
        raise ValueError(constant)
    expected = {"nc3": None, "per_class": [1.5, None, None], "n": 3, "x": 0.25, "nested": [{"v": None}]}
    assert json.loads(json_text(obj), parse_constant=refuse) == expected
    write_json_atomic(tmp_path / "r.json", obj)
    assert json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse) == expected


# --- non-finite classifier --------------------------------------------------------------------------------
def test_template_projection_refuses_a_nan_classifier():
    g = torch.Generator().manual_seed(0)
    h, y = torch.randn(90, 5, generator=g).numpy(), (np.arange(90) % 3)
    w = torch.randn(3, 5, generator=g).numpy()
    w[1, 2] = math.nan
    with pytest.raises(DataError, match="classifier weights or bias of classes \\[0, 1, 2\\] contain NaN"):
        project_classes(h, y, [0, 1, 2], classifier_weight=w, classifier_bias=np.zeros(3))
    assert project_classes(h, y, [0, 1, 2], method="centroid").coords.shape == (90, 2)


def test_the_same_dump_twice_is_refused_unless_named_apart(tmp_path, capsys):
    path = tmp_path / "d"
    dump_of("aa").save(path)
    code, _, stderr = run_cli(["calibration", str(path), str(path), "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, stderr, "two inputs are named 'aa'", "distinct --names")
    code, stdout, stderr = run_cli(["calibration", str(path), str(path), "--names", "A,B", "--json", "--out",
                                    str(tmp_path / "o")], capsys)
    assert code == 0, stderr
    models = json.loads(stdout)["models"]
    assert [m["name"] for m in models] == ["A", "B"] and models[0]["ece"] == models[1]["ece"]


def test_names_must_be_distinct_and_non_empty_except_train_test_pairs(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    dump_of("aa").save(a)
    dump_of("bb", seed=1).save(b)
    out = str(tmp_path / "o")
    code, _, stderr = run_cli(["calibration", str(a), str(b), "--names", "m,m", "--out", out], capsys)
    one_line_error(code, stderr, "--names gives 'm' twice")
    code, _, stderr = run_cli(["embed", str(a), str(b), "--names", "m,,n", "--out", out], capsys)
    one_line_error(code, stderr, "has an empty entry")
    code, _, stderr = run_cli(["features", "--dump", str(a), "--dump", str(a), "--classes", "0,1,2", "--out", out],
                              capsys)
    one_line_error(code, stderr, "is given twice")
    # separation pairs a train and a test Dump of one model by their shared name
    code, stdout, stderr = run_cli(["separation", str(a), str(b), "--names", "M,M", "--json", "--out", out], capsys)
    assert code == 0, stderr
    code, _, stderr = run_cli(["separation", str(a), str(a), "--out", out], capsys)
    one_line_error(code, stderr, "is given twice under the name 'aa'")


@pytest.mark.parametrize("argv", [["calibration", "X"], ["ood", "--in", "X", "--ood", "X"], ["analyze-logits", "X"],
                                  ["separation", "X"], ["collapse", "X"], ["features", "--dump", "X"],
                                  ["embed", "X"], ["transfer", "--train", "X", "--test", "X"]])
def test_an_unusable_out_is_refused_before_any_work(argv, tmp_path, capsys):
    # the input does not even exist: the --out check comes first, at parse time, not after minutes of UMAP
    (tmp_path / "file.txt").write_text("x")
    argv = [str(tmp_path / "missing") if a == "X" else a for a in argv]
    code, _, stderr = run_cli([*argv, "--out", str(tmp_path / "file.txt" / "o")], capsys)
    one_line_error(code, stderr, "Invalid value for '--out'", "file.txt is a file; expected a folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for out in (tmp_path / "dangling", tmp_path / "dangling" / "sub"):
        code, _, stderr = run_cli([*argv, "--out", str(out)], capsys)
        one_line_error(code, stderr, "Invalid value for '--out'", "dangling is a broken symbolic link")


def test_unusable_output_paths_and_settings_are_bad_input(tmp_path, capsys, monkeypatch):
    a = tmp_path / "a"
    dump_of("aa").save(a)
    (tmp_path / "file.txt").write_text("x")
    code, _, stderr = run_cli(["calibration", str(a), "--out", str(tmp_path / "file.txt" / "sub")], capsys)
    one_line_error(code, stderr, "--out", f"{tmp_path / 'file.txt'} is a file; expected a folder")
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(DumpError, match="is a directory; expected the path of a .pt file"):
        dump_of("aa").save(tmp_path / "d.pt", overwrite=True)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(["config", "set", "data.layout", "bogus"], capsys)
    one_line_error(code, stderr, "unknown data layout 'bogus'", "imagefolder")
    code, _, stderr = run_cli(["config", "set", "runs.dir", " "], capsys)
    one_line_error(code, stderr, "runs.dir cannot be empty")
    assert not (tmp_path / "repanalysis.toml").exists()


def test_a_dump_missing_an_array_its_meta_lists_is_damaged(tmp_path):
    from repanalysis.extract.store import load_dump

    dump_of("aa").save(tmp_path / "d")
    (tmp_path / "d" / "features.npy").unlink()
    with pytest.raises(DumpError, match="lists features.npy but the file is missing; the Dump is damaged"):
        load_dump(tmp_path / "d")


def test_sample_names_with_line_breaks_are_refused_and_nothing_is_left(tmp_path):
    from repanalysis.extract.store import DumpWriter

    specs = {"logits": ((3,), np.float32), "labels": ((), np.int64)}
    with pytest.raises(DumpError, match="contains a line break"):
        DumpWriter(tmp_path / "d", 2, specs, {"fingerprint": "f"}, sample_names=["zero/a.png", "zero/a\nb.png"])
    assert not (tmp_path / "d").exists()
    DumpWriter(tmp_path / "d", 2, specs, {"fingerprint": "f"}, sample_names=["zero/a.png", "zero/b.png"])
    assert (tmp_path / "d" / "samples.txt").read_text() == "zero/a.png\nzero/b.png\n"


def test_features_on_an_empty_dump_says_it_has_no_samples(tmp_path, capsys):
    Dump.from_arrays(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), features=np.zeros((0, 4), np.float32),
                     name="empty").save(tmp_path / "e")
    code, _, stderr = run_cli(["features", "--dump", str(tmp_path / "e"), "--classes", "auto", "--out",
                               str(tmp_path / "o")], capsys)
    one_line_error(code, stderr, "empty: the Dump has no samples")


# --- names that are not UTF-8 --------------------------------------------------------------------------

def test_undecodable_names_are_shown_with_a_replacement_character(tmp_path, capsys):
    """A --names argument or class folder name holding a byte that is not UTF-8 (a lone surrogate, PEP 383)
    used to stop matplotlib with an internal error; it is shown with U+FFFD and the figures are drawn."""
    import os

    from repanalysis.text import display_text

    latin = os.fsdecode(b"M\xfcller")                 # b'\xfc' is Latin-1, not UTF-8: 'M\udcfcller'
    assert display_text(latin) == "M\ufffdller" and display_text("M\u00fcller") == "M\u00fcller"
    d = dump_of("a")
    d.meta["class_names"] = [os.fsdecode(b"\xe9t\xe9"), "b", "c"]
    d.save(tmp_path / "d")
    assert repanalysis.load_dump(tmp_path / "d").class_names == ["\ufffdt\ufffd", "b", "c"]
    code, _, stderr = run_cli(["calibration", str(tmp_path / "d"), "--names", latin, "--bins", "5",
                               "--out", str(tmp_path / "o")], capsys)
    assert code == 0, stderr
    report = json.loads((tmp_path / "o" / "calibration.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in report["models"]] == ["M\ufffdller"]
    assert (tmp_path / "o" / "reliability.png").stat().st_size > 0


def test_a_seed_pt_in_a_pair_is_named_as_unchecked(tmp_path, capsys):
    # the seed tool's .pt records no checkpoint: the same-model check cannot run, and the user is told
    d = dump_of("aa")
    d.save(tmp_path / "in")
    seed = Dump.from_arrays(torch.randn(40, 3), torch.arange(40) % 3, name="o").save(tmp_path / "o.pt")
    with pytest.warns(RuntimeWarning, match=rf"--ood: {seed.path} records no checkpoint, so it cannot be checked"):
        code, _, stderr = run_cli(["ood", "--in", str(tmp_path / "in"), "--ood", str(seed.path),
                                   "--out", str(tmp_path / "out")], capsys)
    assert code == 0, stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # arrays wrapped in memory: nothing to warn about
        from repanalysis.dump.pairs import check_same_model
        check_same_model(d, Dump.from_arrays(torch.randn(4, 3), torch.arange(4) % 3), "pair")


# --- interrupts and full disks, whatever raises them -----------------------------------------------------
def test_ctrl_c_while_the_command_line_is_still_importing_is_one_line(tmp_path):
    # the console script imports repanalysis (and torch) before main() runs: a Ctrl-C there printed a traceback
    import subprocess
    import sys

    code = "import sys; sys.argv = ['/venv/bin/repanalysis', 'separation']; import repanalysis; raise KeyboardInterrupt"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 130
    assert done.stderr.splitlines() == ["error: interrupted; re-run the same command to finish (an extraction "
                                        "resumes where it stopped)"]
    as_module = ("import sys; sys.argv = ['-m']; sys.orig_argv = [sys.executable, '-m', 'repanalysis', 'info']; "
                 "import repanalysis; raise KeyboardInterrupt")
    done = subprocess.run([sys.executable, "-c", as_module], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 130 and done.stderr.startswith("error: interrupted;")
    # any other program importing the library keeps Python's own handling, `python -m other.module` included
    other = code.replace("/venv/bin/repanalysis", "/venv/bin/my-notebook-script")
    other_module = as_module.replace("'-m', 'repanalysis'", "'-m', 'pkgx.run'")
    for program in (other, other_module):
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode != 130 and "Traceback" in done.stderr      # (killed by SIGINT, as Python does)


def test_a_full_disk_hidden_behind_a_writers_own_error_is_named(monkeypatch, capsys):
    # matplotlib's PDF writer hit ENOSPC, then failed in its cleanup with an AttributeError: say disk full
    import errno

    from repanalysis.cli import main as main_mod

    def fails(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise AttributeError("'Stream' object has no attribute 'pos'")

    monkeypatch.setattr(main_mod.cli, "main", fails)
    code, _, stderr = run_cli(["separation", "x"], capsys)
    assert code == 1
    assert stderr.strip() == ("error: disk full (no space left on device); nothing was replaced: free space and "
                              "re-run the command")


def test_a_cut_short_cached_demo_checkpoint_says_to_delete_it(tmp_path, demo_folder):
    import shutil

    from repanalysis.demo.build import build_context

    folder, checkpoints, _ = demo_folder
    shutil.copytree(folder, tmp_path / "demo")
    ce = tmp_path / "demo" / "checkpoints" / checkpoints["CE"].name
    ce.write_bytes(ce.read_bytes()[:1000])                  # a killed run's half-written file
    with pytest.raises(RepanalysisError, match=f"{ce.name}.*; it is the demo's cached checkpoint: delete it and "
                                               "the demo trains it again"):
        build_context(tmp_path / "demo", epochs=5, n_train=2000, log=lambda m: None, device="cpu")
