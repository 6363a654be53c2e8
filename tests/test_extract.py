"""Extraction on real trained checkpoints: exact features, resume, seed .pt output, NaN logits, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import repanalysis as ra
from repanalysis.cli.main import main
from repanalysis.errors import RepanalysisError
from repanalysis.train.trainer import _to_input
from _cli import run_cli as _cli


def test_real_dumps_hold_what_the_model_computes(real_checkpoints, real_data, real_dumps):
    d = real_dumps["CE"]["test"]
    images = np.load(real_data["test"])["images"]
    lm = ra.load_model(real_checkpoints["CE"])
    with torch.no_grad():
        direct = lm.model(_to_input(images)).numpy()
    np.testing.assert_allclose(d.logits, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.features @ d.classifier_weight.T + d.classifier_bias, d.logits, atol=1e-4)
    assert (d.logits.argmax(1) == d.labels).mean() > 0.85  # a really trained model
    assert d.class_names[:3] == ["zero", "one", "two"] and d.meta["arch"] == "small_cnn"
    assert d.meta["checkpoint"]["sha256"] == lm.sha256 and d.complete
    np.testing.assert_array_equal(d.ids, np.arange(d.num_samples))


def test_interrupted_extraction_resumes_to_the_same_dump(tmp_path, real_checkpoints, real_data, real_dumps):
    lm = ra.load_model(real_checkpoints["LS"])
    part = ra.extract(lm, real_data["test"], tmp_path / "d", batch_size=100, max_batches=3, progress=False,
                      workers=0)
    assert not part.complete and part.num_samples == 300
    with pytest.raises(RepanalysisError, match="incomplete"):
        ra.load_dump(tmp_path / "d")
    full = ra.extract(lm, real_data["test"], tmp_path / "d", batch_size=64, progress=False, workers=0)
    # extraction runs convolutions channels_last, and hands the caller's model back in its own format
    convs = [m.weight for m in lm.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous() for w in convs)
    ref = real_dumps["LS"]["test"]
    np.testing.assert_allclose(full.logits, ref.logits, atol=1e-5)
    np.testing.assert_allclose(full.features, ref.features, atol=1e-5)
    np.testing.assert_array_equal(full.labels, ref.labels)


def test_seed_pt_output_and_bf16(tmp_path, real_checkpoints, real_data, real_dumps):
    d = ra.extract(real_checkpoints["MaxSup"], real_data["test"], tmp_path / "out.pt", progress=False, workers=0)
    obj = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(obj) == {"logits", "labels"} and obj["logits"].dtype == torch.float32
    np.testing.assert_allclose(obj["logits"].numpy(), real_dumps["MaxSup"]["test"].logits, atol=1e-5)
    assert not (tmp_path / "out.pt.partial").exists() and d.num_samples == len(obj["labels"])
    b = ra.extract(real_checkpoints["MaxSup"], real_data["test"], tmp_path / "bf16", precision="bf16",
                   progress=False, workers=0)
    agree = (b.logits.argmax(1) == real_dumps["MaxSup"]["test"].logits.argmax(1)).mean()
    assert agree > 0.98 and b.meta["precision"] == "bf16"


def test_nan_logits_are_counted_and_warned(tmp_path, real_checkpoints):
    import dataclasses

    from torch import nn

    from repanalysis.train.trainer import write_npz

    class NaNWhereBright(nn.Module):
        """The real CE model, except that it answers NaN for all-white images."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            z = self.inner(x)
            return torch.where((x.flatten(1).mean(1) > 2.5)[:, None], torch.nan, z)

    lm = ra.load_model(real_checkpoints["CE"])
    lm = dataclasses.replace(lm, model=NaNWhereBright(lm.model), classifier_name="inner.fc")
    images = np.random.default_rng(0).integers(0, 60, (20, 28, 28)).astype(np.uint8)
    images[[2, 7, 11]] = 255
    write_npz(tmp_path / "nan.npz", images, np.arange(20) % 10)
    with pytest.warns(RuntimeWarning, match="3 of 20 samples have NaN or inf logits"):
        d = ra.extract(lm, tmp_path / "nan.npz", tmp_path / "d", progress=False, workers=0)
    assert d.meta["nonfinite_logit_rows"] == 3
    np.testing.assert_array_equal(np.flatnonzero(~np.isfinite(d.logits).all(1)), [2, 7, 11])


def test_model_and_data_that_do_not_fit_fail_clearly(tmp_path, real_checkpoints):
    from repanalysis.train.trainer import write_npz

    write_npz(tmp_path / "rgb.npz", np.zeros((4, 32, 32, 3), np.uint8), np.arange(4))
    with pytest.raises(RepanalysisError, match="cannot run on this data"):
        ra.extract(real_checkpoints["CE"], tmp_path / "rgb.npz", tmp_path / "d", progress=False, workers=0,
                   transform=ra.load_model(real_checkpoints["CE"]).transform.__class__(
                       resolution=None, mean=(0.5,) * 3, std=(0.5,) * 3, channels=3))
    write_npz(tmp_path / "many.npz", np.zeros((12, 28, 28), np.uint8), np.arange(12))
    with pytest.raises(RepanalysisError, match="12 classes but the model outputs 10"):
        ra.extract(real_checkpoints["CE"], tmp_path / "many.npz", tmp_path / "d2", progress=False, workers=0)


def test_bare_logits_command_uses_the_configured_data_and_run_folder(tmp_path, monkeypatch, capsys,
                                                                     real_checkpoints, real_data):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("REPANALYSIS_DATA", raising=False)
    code, _, err = _cli(["logits", "--checkpoint", str(real_checkpoints["CE"])], capsys)
    assert code == 2 and err.count("\n") == 1 and "repanalysis config set data.root" in err
    assert "Traceback" not in err
    main(["config", "set", "data.root", str(real_data["test"])])
    main(["logits", "--checkpoint", str(real_checkpoints["CE"]), "--quiet"])
    out = capsys.readouterr().out
    stem = real_checkpoints["CE"].stem
    d = ra.load_dump(tmp_path / "runs" / stem / "logits")
    assert d.features is None and d.num_samples == 3000 and f"runs/{stem}/logits" in out
    main(["config"])
    assert "repanalysis.toml" in capsys.readouterr().out
    code, _, err = _cli(["logits", "--checkpoint", str(real_checkpoints["CE"]), "--quiet"], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    main(["info", str(tmp_path / "runs" / stem / "logits")])
    out = capsys.readouterr().out
    acc = float((d.logits.argmax(1) == d.labels).mean())
    assert f"{acc:.4f}" in out and "small_cnn" in out


@pytest.mark.parametrize("args,pattern", [
    (["logits", "--checkpoint", "nope.pth", "--data", "x"], "checkpoint not found: nope.pth"),
    (["info", "missing_dump"], "no such dump"),
    (["extract", "--checkpoint", "{ck}", "--data", "{empty}"], "no images found|empty|no samples"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, real_checkpoints, args, pattern):
    import re

    (tmp_path / "empty").mkdir()
    args = [a.format(ck=real_checkpoints["CE"], empty=tmp_path / "empty") for a in args]
    code, _, err = _cli(args, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(pattern, err), err


def test_data_rewritten_in_place_is_not_resumed_into_the_old_rows(tmp_path, real_checkpoints, real_data):
    # an interrupted Dump, then the data file at the same path rewritten with other images (same labels and
    # count): resuming would mix two data sets, so the rerun is refused as a different run
    from repanalysis.train.trainer import DIGIT_NAMES, write_npz

    z = np.load(real_data["test"])
    data = tmp_path / "digits_test.npz"
    write_npz(data, z["images"][:300], z["labels"][:300], DIGIT_NAMES)
    lm = ra.load_model(real_checkpoints["CE"])
    part = ra.extract(lm, data, tmp_path / "d", batch_size=100, max_batches=1, progress=False, workers=0)
    assert part.num_samples == 100 and not part.complete
    write_npz(data, 255 - z["images"][:300], z["labels"][:300], DIGIT_NAMES)
    with pytest.raises(RepanalysisError, match="a Dump of a different run"):
        ra.extract(lm, data, tmp_path / "d", batch_size=100, progress=False, workers=0)
    # an incomplete Dump made before the run identity covered the images (no fingerprint_scheme): said so
    import json

    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    del meta["fingerprint_scheme"]
    (tmp_path / "d" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RepanalysisError, match="or of this run made by an earlier repanalysis whose run identity"):
        ra.extract(lm, data, tmp_path / "d", batch_size=100, progress=False, workers=0)
    # another tool's meta.json is no Dump at all, old or new: never replaced, not even with --overwrite
    (tmp_path / "d" / "meta.json").write_text(json.dumps({"tool": "other"}))
    for overwrite in (False, True):
        with pytest.raises(RepanalysisError, match=r"holds files that are not a Dump's \(meta.json of another "
                                                   r"tool\); .*choose another --output or empty it$"):
            ra.extract(lm, data, tmp_path / "d", batch_size=100, progress=False, workers=0, overwrite=overwrite)
    assert json.loads((tmp_path / "d" / "meta.json").read_text()) == {"tool": "other"}
    # an image folder: one image rewritten (other size) changes the run as well
    from PIL import Image

    folder = tmp_path / "folder"
    for i in range(4):
        (folder / DIGIT_NAMES[i]).mkdir(parents=True)
        Image.fromarray(z["images"][i]).save(folder / DIGIT_NAMES[i] / "a.png")
    first = ra.open_dataset(folder).fingerprint()
    assert ra.open_dataset(folder).fingerprint() == first            # the same files: the same run
    Image.fromarray(255 - z["images"][0]).resize((30, 30)).save(folder / DIGIT_NAMES[0] / "a.png")
    assert ra.open_dataset(folder).fingerprint() != first


def test_a_run_killed_while_laying_out_the_dump_is_restarted(tmp_path, real_checkpoints, real_data, real_dumps,
                                                             capsys):
    # the process dies (no cleanup runs) right after the first array file is laid out: the output holds no
    # meta.json (readers see no half-made Dump) and the rerun of the same command lays it out again; the same
    # for an --overwrite run, whose existing Dump stays readable meanwhile
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "d"

    def killed_run(overwrite):
        child = textwrap.dedent(f"""
            import os
            import repanalysis as ra
            from repanalysis.extract import store
            store._reserve = lambda file: os._exit(9)      # killed while laying out
            ra.extract({str(real_checkpoints["CE"])!r}, {str(real_data["test"])!r}, {str(out)!r}, progress=False,
                       workers=0, overwrite={overwrite})
        """)
        assert subprocess.run([sys.executable, "-c", child], capture_output=True).returncode == 9

    args = ["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]), "--output",
            str(out), "--workers", "0", "--quiet"]
    killed_run(False)
    assert not (out / "meta.json").exists() and any((out / ".layout.partial").glob("*.npy"))
    with pytest.raises(RepanalysisError, match="no meta.json|not a Dump"):
        ra.load_dump(out, allow_incomplete=True)
    code, _, stderr = _cli(args, capsys)
    assert code == 0, stderr
    assert ra.load_dump(out).complete and not (out / ".layout.partial").exists()
    killed_run(True)
    np.testing.assert_allclose(ra.load_dump(out).logits, real_dumps["CE"]["test"].logits, atol=1e-5)
    code, _, stderr = _cli(args + ["--overwrite"], capsys)
    assert code == 0, stderr
    d = ra.load_dump(out)
    assert d.complete and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    np.testing.assert_allclose(d.logits, real_dumps["CE"]["test"].logits, atol=1e-5)


def test_seed_pt_that_cannot_be_written_is_written_by_the_rerun(tmp_path, real_checkpoints, real_data, real_dumps,
                                                                monkeypatch, capsys):
    # torch.save on a full disk raises a RuntimeError from its zip writer: one line naming the full disk; the
    # rerun of the same command writes the .pt from the complete partial Dump without extracting again
    import collections
    import shutil

    from repanalysis.extract import runner

    out = tmp_path / "out.pt"
    args = ["logits", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]), "--output",
            str(out), "--workers", "0", "--quiet"]

    usage = collections.namedtuple("usage", "total used free")
    with monkeypatch.context() as m:
        def full_disk(*a, **k):          # the disk fills up while the .pt is written
            m.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 4096))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")

        m.setattr(torch, "save", full_disk)
        code, _, stderr = _cli(args, capsys)
    assert code == 2 and stderr.strip() == f"error: cannot write {out}: disk full; free space and re-run"
    assert not out.exists() and not list(tmp_path.glob(".out.pt.*.tmp"))
    monkeypatch.setattr(runner, "_run", lambda *a, **k: pytest.fail("extracted again"))
    code, _, stderr = _cli(args, capsys)
    assert code == 0, stderr
    obj = torch.load(out, weights_only=True)
    np.testing.assert_allclose(obj["logits"].numpy(), real_dumps["CE"]["test"].logits, atol=1e-5)
    assert not (tmp_path / "out.pt.partial").exists()


def _no_config(monkeypatch, tmp_path):
    """Run in tmp_path with no configured data set and runs/ under tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPANALYSIS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("REPANALYSIS_RUNS", str(tmp_path / "runs"))
    for var in ("REPANALYSIS_DATA", "REPANALYSIS_LAYOUT", "REPANALYSIS_SPLIT", "REPANALYSIS_CLASS_ORDER"):
        monkeypatch.delenv(var, raising=False)


def test_features_cache_is_reused_only_for_the_same_run(tmp_path, real_checkpoints, real_data, real_dumps,
                                                        monkeypatch):
    # runs/<stem>/features is a cache keyed by the run fingerprint (checkpoint sha256, data, split, ...), not by
    # the checkpoint's file name: another checkpoint of the same name is not served the first one's features
    import shutil

    from repanalysis.extract import runner
    from repanalysis.extract.gather import extract_features_cached

    _no_config(monkeypatch, tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "model.pth", tmp_path / "b" / "model.pth"
    shutil.copy(real_checkpoints["CE"], first)
    shutil.copy(real_checkpoints["LS"], second)
    data = real_data["test"]
    d = extract_features_cached(first, data, device="cpu", name="A")
    np.testing.assert_allclose(d.features, real_dumps["CE"]["test"].features, atol=1e-4)
    assert d.name == "A" and ra.load_dump(d.path).name == "model"     # a display name is not written into the cache
    with monkeypatch.context() as m:                 # the same run again: reused as it is, nothing extracted
        m.setattr(runner, "_run", lambda *a, **k: pytest.fail("extracted again"))
        again = extract_features_cached(first, data, device="cpu", name="CE")
        assert again.name == "CE" and again.path == tmp_path / "runs" / "model" / "features"
        np.testing.assert_array_equal(again.features, d.features)
        # no data given and none configured: the data the cached Dump records, checked the same way
        np.testing.assert_array_equal(extract_features_cached(first, None, device="cpu").features, d.features)
        with pytest.raises(RepanalysisError, match=r"runs/model/features already exists \(a Dump of a different run: "
                                                   r"other checkpoint\); pass --overwrite to replace it$"):
            extract_features_cached(second, data, device="cpu")
    np.testing.assert_array_equal(ra.load_dump(d.path).features, d.features)      # the cache is left as it was
    new = extract_features_cached(second, data, device="cpu", overwrite=True)
    assert new.meta["checkpoint"]["sha256"] == ra.load_model(second).sha256
    np.testing.assert_allclose(new.features, real_dumps["LS"]["test"].features, atol=1e-4)
    np.testing.assert_allclose(new.logits, real_dumps["LS"]["test"].logits, atol=1e-4)
    runs = []                                        # --overwrite extracts again even for this same run
    real_run = runner._run
    monkeypatch.setattr(runner, "_run", lambda *a, **k: runs.append(1) or real_run(*a, **k))
    extract_features_cached(second, data, device="cpu", overwrite=True)
    assert runs == [1]


def test_features_of_a_folder_of_split_npz_files_rerun_reuses_the_cache(tmp_path, real_checkpoints, real_data,
                                                                         monkeypatch, capsys):
    # the Dump records FOLDER/test.npz as its root: the identical command, run again, reuses it (the run
    # fingerprint is the same), and the run folder's Dumps count as Dumps of --data FOLDER
    import shutil

    from repanalysis.extract import runner

    _no_config(monkeypatch, tmp_path)
    folder = tmp_path / "splits"
    folder.mkdir()
    shutil.copy(real_data["test"], folder / "test.npz")
    shutil.copy(real_data["train"], folder / "train.npz")
    ck = tmp_path / "cesplit.pth"
    shutil.copy(real_checkpoints["CE"], ck)
    args = ["features", "--checkpoint", str(ck), "--data", str(folder), "--split", "test", "--classes",
            "four,seven,nine", "--device", "cpu"]
    code, _, err = _cli(args + ["--out", str(tmp_path / "o1")], capsys)
    assert code == 0, err
    dump = ra.load_dump(tmp_path / "runs" / "cesplit" / "features")
    assert dump.meta["dataset"]["root"] == str(folder / "test.npz") and dump.meta["split"] == "test"
    monkeypatch.setattr(runner, "_run", lambda *a, **k: pytest.fail("extracted again"))
    code, _, err = _cli(args + ["--out", str(tmp_path / "o2")], capsys)
    assert code == 0, err
    assert f"using {tmp_path / 'runs' / 'cesplit' / 'features'}: a complete Dump of this same run" in err
    coords = "projection_template_coords.csv"
    assert (tmp_path / "o1" / coords).read_text() == (tmp_path / "o2" / coords).read_text()
    code, _, err = _cli(["features", "--data", str(folder), "--classes", "four,seven,nine", "--out",
                         str(tmp_path / "o3")], capsys)
    assert code == 0, err
    assert (tmp_path / "o3" / coords).read_text() == (tmp_path / "o1" / coords).read_text()
    # another split of that folder is another run: refused, not silently served the test split
    code, _, err = _cli(args[:6] + ["train"] + args[7:] + ["--out", str(tmp_path / "o4")], capsys)
    assert code == 2 and "already exists (a Dump of a different run: other data, split); pass --overwrite" in err
