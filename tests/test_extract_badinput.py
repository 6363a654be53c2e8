"""Bad input on the extraction side: each case gives one `error:` line and exit 2, or the right values, and never
loses or half-writes a Dump. Built on the real MNIST checkpoints and digits of conftest.py, on small subsets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import repanalysis as ra
from repanalysis.errors import DataError, DumpError, RepanalysisError
from repanalysis.extract.store import Dump, DumpWriter, load_dump, staging_path
from _cli import run_cli as _cli

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _digits(real_data, n):
    with np.load(real_data["test"]) as z:
        return z["images"][:n], z["labels"][:n].astype(np.int64)


def _image_folder(root, images, folder_names, labels, bad=None):
    """root/<folder_names[label]>/<i>.png for each image; ``bad``: {relative path: bytes} written as well."""
    for i, (im, y) in enumerate(zip(images, labels)):
        (root / folder_names[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / folder_names[y] / f"{i:04d}.png")
    for rel, raw in (bad or {}).items():
        (root / rel).write_bytes(raw)
    return root


def _one_error_line(code, err, pattern):
    import re

    assert code == 2 and "Traceback" not in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(pattern, err), err


def _extract(ckpt, data, out, **kw):
    kw.setdefault("features", False)
    return ra.extract(ckpt, data, out, progress=False, workers=0, batch_size=kw.pop("batch_size", 64), **kw)


# --- 1. ImageFolder named after the model's classes -------------------------------------------------------
def test_imagefolder_named_after_model_classes_gets_the_models_labels(tmp_path, real_checkpoints, real_data):
    images, labels = _digits(real_data, 120)
    _image_folder(tmp_path / "named", images, NAMES, labels)
    d = _extract(real_checkpoints["CE"], tmp_path / "named", tmp_path / "d")
    files = d.sample_names()
    truth = np.array([int(f.split("/")[1][:4]) for f in files])    # file i.png holds digit labels[i]
    np.testing.assert_array_equal(d.labels, labels[truth])           # label = model index of the folder name
    assert (d.logits.argmax(1) == d.labels).mean() > 0.85
    assert d.class_names == NAMES and d.meta["dataset"]["class_order"] == "model class names"

    # spelled differently (case, '_' for ' '), and only some of the classes: still the model's indices
    _image_folder(tmp_path / "some", images[labels < 3], ["ZERO", "One", "tWo"], labels[labels < 3])
    d2 = _extract(real_checkpoints["CE"], tmp_path / "some", tmp_path / "d2")
    np.testing.assert_array_equal(np.sort(d2.labels), np.sort(labels[labels < 3]))
    assert (d2.logits.argmax(1) == d2.labels).mean() > 0.85

    # folders that are not the model's names keep ImageFolder's sorted-folder labels
    _image_folder(tmp_path / "other", images[:20], [f"c{k}" for k in "jihgfedcba"], labels[:20])
    d3 = _extract(real_checkpoints["CE"], tmp_path / "other", tmp_path / "d3")
    ranks = {f"c{k}": i for i, k in enumerate("abcdefghij")}
    np.testing.assert_array_equal(d3.labels, [ranks[f.split("/")[0]] for f in d3.sample_names()])
    # an explicit class order still wins over the folder names
    (tmp_path / "order.txt").write_text("\n".join(reversed(NAMES)) + "\n")
    d4 = _extract(real_checkpoints["CE"], tmp_path / "named", tmp_path / "d4", class_order=tmp_path / "order.txt")
    np.testing.assert_array_equal(d4.labels, 9 - d.labels)


# --- 2. --overwrite keeps the old Dump until the new one is complete --------------------------------------
def test_failed_overwrite_keeps_the_existing_dump(tmp_path, capsys, real_checkpoints, real_data):
    images, labels = _digits(real_data, 40)
    from repanalysis.train.trainer import write_npz

    write_npz(tmp_path / "good.npz", images, labels, NAMES)
    _image_folder(tmp_path / "bad", images[:6], NAMES, labels[:6], bad={"zero/0000.png": b"not a png"})
    ck, out = str(real_checkpoints["CE"]), tmp_path / "d"
    code, _, err = _cli(["extract", "--checkpoint", ck, "--data", str(tmp_path / "good.npz"), "--output", str(out),
                         "--quiet", "--workers", "0"], capsys)
    assert code == 0, err
    before = np.array(load_dump(out).logits)
    code, _, err = _cli(["extract", "--checkpoint", ck, "--data", str(tmp_path / "bad"), "--output", str(out),
                         "--quiet", "--workers", "0", "--overwrite"], capsys)
    _one_error_line(code, err, "cannot read image .*0000.png")
    kept = load_dump(out)
    assert kept.complete and kept.num_samples == 40 and kept.features is not None
    np.testing.assert_array_equal(kept.logits, before)
    assert not staging_path(out).exists()   # the failed run held no rows: nothing left behind


def test_interrupted_overwrite_resumes_in_staging_then_swaps(tmp_path, real_checkpoints, real_data):
    from repanalysis.train.trainer import write_npz

    images, labels = _digits(real_data, 60)
    write_npz(tmp_path / "a.npz", images[:30], labels[:30], NAMES)
    write_npz(tmp_path / "b.npz", images, labels, NAMES)
    ck, out = real_checkpoints["CE"], tmp_path / "d"
    old = _extract(ck, tmp_path / "a.npz", out)
    old_logits = np.array(old.logits)
    part = _extract(ck, tmp_path / "b.npz", out, overwrite=True, batch_size=10, max_batches=2)
    assert not part.complete and part.num_samples == 20 and part.path == staging_path(out)
    np.testing.assert_array_equal(load_dump(out).logits, old_logits)   # the old Dump is untouched meanwhile
    messages = []
    new = _extract(ck, tmp_path / "b.npz", out, overwrite=True, batch_size=10, log=messages.append)
    assert any("resuming" in m and "at sample 20" in m for m in messages), messages
    assert new.complete and new.num_samples == 60 and new.path == out and not staging_path(out).exists()
    np.testing.assert_array_equal(load_dump(out).labels, labels)
    ref = _extract(ck, tmp_path / "b.npz", tmp_path / "ref")
    np.testing.assert_allclose(load_dump(out).logits, ref.logits, atol=1e-5)
    # the in-place resume of an incomplete Dump of the same run (no --overwrite) still works
    _extract(ck, tmp_path / "a.npz", tmp_path / "r", batch_size=10, max_batches=1)
    r = _extract(ck, tmp_path / "a.npz", tmp_path / "r", batch_size=10)
    assert r.complete and r.num_samples == 30 and not staging_path(tmp_path / "r").exists()


# --- 3. extract to a .pt ---------------------------------------------------------------------------------
def test_extract_to_a_pt_file_is_refused_instead_of_dropping_features(tmp_path, capsys, real_checkpoints,
                                                                       real_data):
    code, _, err = _cli(["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                         "--output", str(tmp_path / "x.pt"), "--quiet"], capsys)
    _one_error_line(code, err, r"x\.pt is a \.pt file.*Dump folder.*repanalysis logits --output x\.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.pt.partial").exists()
    with pytest.raises(DumpError, match="features"):
        ra.extract(real_checkpoints["CE"], real_data["test"], tmp_path / "y.pt", features=True)


# --- 4. a failed first run does not block its re-run ------------------------------------------------------
def test_failed_first_run_leaves_nothing_and_skip_bad_rerun_works(tmp_path, capsys, real_checkpoints, real_data):
    images, labels = _digits(real_data, 12)
    data = _image_folder(tmp_path / "bad", images, NAMES, labels, bad={"one/zzzz.png": b"not a png"})
    ck, out = str(real_checkpoints["CE"]), tmp_path / "d"
    args = ["extract", "--checkpoint", ck, "--data", str(data), "--output", str(out), "--quiet", "--workers", "0"]
    code, _, err = _cli(args, capsys)
    _one_error_line(code, err, "cannot read image .*zzzz.png.*--skip-bad")
    assert not out.exists()
    code, _, err = _cli(args + ["--skip-bad"], capsys)
    assert code == 0, err
    d = load_dump(out)
    assert d.complete and d.num_samples == 12 and d.meta["skipped"] == ["one/zzzz.png"]

    # an incomplete Dump with 0 rows done (left by a killed run) is replaced by a different run
    specs = {"logits": ((10,), np.float32), "labels": ((), np.int64)}
    DumpWriter(tmp_path / "e", 5, specs, {"fingerprint": "some-other-run"})
    code, _, err = _cli(["logits", "--checkpoint", ck, "--data", str(data), "--output", str(tmp_path / "e"),
                         "--quiet", "--workers", "0", "--skip-bad"], capsys)
    assert code == 0, err
    assert load_dump(tmp_path / "e").num_samples == 12
    # ... but one with rows done is still protected
    w = DumpWriter(tmp_path / "f", 5, specs, {"fingerprint": "some-other-run"})
    w.write(0, {"logits": np.zeros((2, 10), np.float32), "labels": np.zeros(2, np.int64)})
    w.commit(2)
    with pytest.raises(DumpError, match="different run.*--overwrite"):
        DumpWriter(tmp_path / "f", 7, specs, {"fingerprint": "x"})


# --- 5. normalisation std ---------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,pattern", [(["--std", "0"], "std must be finite and greater than 0.*got 0"),
                                           (["--std", "-1"], "std must be finite and greater than 0.*got -1"),
                                           (["--std", "nan"], "std must be finite"),
                                           (["--mean", "inf"], "mean must be finite")])
def test_std_must_be_positive_and_finite(tmp_path, capsys, real_checkpoints, real_data, flags, pattern):
    code, _, err = _cli(["logits", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                         "--output", str(tmp_path / "o"), "--quiet", *flags], capsys)
    _one_error_line(code, err, pattern)
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="std"):
        ra.data.transforms.EvalTransform(std=(0.2, 0.0, 0.2))


# --- 6. an unreadable .npz --------------------------------------------------------------------------------
def test_corrupt_npz_names_the_file(tmp_path, capsys, real_checkpoints, real_data):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(real_data["test"].read_bytes()[:3000])
    with pytest.raises(DataError, match=r"corrupt\.npz is not a readable \.npz"):
        ra.open_dataset(bad)
    code, _, err = _cli(["logits", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(bad),
                         "--output", str(tmp_path / "o"), "--quiet"], capsys)
    _one_error_line(code, err, r"corrupt\.npz is not a readable \.npz")
    assert not (tmp_path / "o").exists()


# --- 7. non-integral labels -------------------------------------------------------------------------------
def test_fractional_labels_are_rejected_where_dumps_are_read(tmp_path, capsys):
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(30, 4)).astype(np.float32), rng.integers(0, 4, 30)
    torch.save({"logits": torch.from_numpy(logits), "labels": torch.from_numpy(labels).float() + 0.5},
               tmp_path / "half.pt")
    with pytest.raises(DumpError, match=r"30 of 30 labels are not whole numbers .*expected integer"):
        load_dump(tmp_path / "half.pt")
    code, _, err = _cli(["info", str(tmp_path / "half.pt")], capsys)
    _one_error_line(code, err, "not whole numbers")
    # whole-number floats are fine and come back as int64
    torch.save({"logits": torch.from_numpy(logits), "labels": torch.from_numpy(labels).double()},
               tmp_path / "whole.pt")
    d = load_dump(tmp_path / "whole.pt")
    assert d.labels.dtype == np.int64
    np.testing.assert_array_equal(d.labels, labels)
    with pytest.raises(DumpError, match="not whole numbers"):
        Dump.from_arrays(logits, labels + 0.25)
    assert Dump.from_arrays(logits, labels.astype(np.float32)).labels.dtype == np.int64
    with pytest.raises(DumpError, match="NaN|not whole numbers"):
        Dump.from_arrays(logits, np.where(labels > 1, np.nan, labels))
    # a Dump folder whose labels.npy holds fractions
    Dump.from_arrays(logits, labels).save(tmp_path / "d")
    np.save(tmp_path / "d" / "labels.npy", labels.astype(np.float32) + 0.5)
    with pytest.raises(DumpError, match="not whole numbers"):
        load_dump(tmp_path / "d")
    code, _, err = _cli(["collapse", str(tmp_path / "d")], capsys)
    _one_error_line(code, err, "not whole numbers")


# --- 8. meta.json that is not an object -------------------------------------------------------------------
@pytest.mark.parametrize("meta", [[1, 2], "text", 3, None])
def test_meta_json_must_hold_an_object(tmp_path, capsys, meta):
    rng = np.random.default_rng(0)
    Dump.from_arrays(rng.normal(size=(8, 3)), rng.integers(0, 3, 8)).save(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DumpError, match="meta.json holds a JSON .*expected an object"):
        load_dump(tmp_path / "d")
    code, _, err = _cli(["info", str(tmp_path / "d")], capsys)
    _one_error_line(code, err, "meta.json holds a JSON")
    # a writer told to write there treats it as a damaged Dump (nothing but a Dump's files): --overwrite replaces it
    with pytest.raises(DumpError, match=r"already exists \(a damaged Dump: its meta.json is missing or unreadable\); "
                                        "pass --overwrite"):
        DumpWriter(tmp_path / "d", 8, {"logits": ((3,), np.float32)}, {"fingerprint": "x"})
    specs = {"logits": ((3,), np.float32), "labels": ((), np.int64)}
    w = DumpWriter(tmp_path / "d", 8, specs, {"fingerprint": "x"}, overwrite=True)
    w.write(0, {"logits": np.ones((8, 3), np.float32), "labels": np.arange(8) % 3})
    w.finalize()
    assert load_dump(tmp_path / "d").meta["fingerprint"] == "x" and not staging_path(tmp_path / "d").exists()


# --- 9. accuracy of non-finite logits ---------------------------------------------------------------------
def test_accuracy_leaves_out_nonfinite_rows(tmp_path, capsys):
    from repanalysis.cli._extraction import summary_row

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 10)).astype(np.float32), rng.integers(0, 10, 50)
    all_nan = np.full_like(logits, np.nan)
    torch.save({"logits": torch.from_numpy(all_nan), "labels": torch.from_numpy(labels)}, tmp_path / "allnan.pt")
    some = logits.copy()
    some[:7, 3] = np.inf
    torch.save({"logits": torch.from_numpy(some), "labels": torch.from_numpy(labels)}, tmp_path / "some.pt")
    row = summary_row(load_dump(tmp_path / "allnan.pt"))
    assert row["accuracy"] is None and row["nonfinite"] == 50
    row = summary_row(load_dump(tmp_path / "some.pt"))
    assert row["accuracy"] == pytest.approx((logits[7:].argmax(1) == labels[7:]).mean())
    assert row["nonfinite"] == 7
    code, out, err = _cli(["info", str(tmp_path / "allnan.pt"), str(tmp_path / "some.pt")], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "accuracy" in lines[0] and "non-finite" in lines[0]
    allnan_cells, some_cells = lines[2].split(), lines[3].split()
    assert allnan_cells[4] == "-" and allnan_cells[5] == "50"     # N K D accuracy non-finite
    assert some_cells[4] == f"{(logits[7:].argmax(1) == labels[7:]).mean():.4f}" and some_cells[5] == "7"
    assert "0.1" not in lines[2]


# --- 10. bare state_dict of the 1-channel CNN -------------------------------------------------------------
def test_bare_state_dict_of_grayscale_cnn_runs(tmp_path, real_checkpoints, real_data, real_dumps):
    from safetensors.torch import save_file

    lm = ra.load_model(real_checkpoints["CE"])
    sd = {k: v.contiguous() for k, v in lm.model.state_dict().items()}
    torch.save(sd, tmp_path / "bare.pth")
    save_file(sd, tmp_path / "bare.safetensors")
    ref = real_dumps["CE"]["test"]
    for path in (tmp_path / "bare.pth", tmp_path / "bare.safetensors"):
        bare = ra.load_model(path)
        assert bare.arch == "small_cnn" and bare.transform.channels == 1 and bare.transform.resolution is None
        assert any("1-channel input" in n for n in bare.notes)
        d = _extract(bare, real_data["test"], tmp_path / path.suffix[1:])
        np.testing.assert_allclose(d.logits, ref.logits, atol=1e-4)
    with pytest.raises(RepanalysisError, match="std must be"):
        ra.data.transforms.EvalTransform(resolution=None, mean=(0.1,), std=(-0.3,), channels=1)


# --- 11. options of ra.extract are checked before anything is loaded or written ---------------------------
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """(LoadedModel of an untrained SmallCNN, its checkpoint, a 40-digit .npz): fast, for the option checks."""
    from repanalysis.train import mnist_digits
    from repanalysis.train.nets import SmallCNN
    from repanalysis.train.trainer import save_checkpoint, write_npz

    folder = tmp_path_factory.mktemp("small")
    torch.manual_seed(0)
    ckpt = save_checkpoint(SmallCNN(), folder / "m.pth", loss="ce")
    images, labels = mnist_digits(n_train=4960)["test"]
    npz = write_npz(folder / "digits.npz", images, labels, NAMES)
    return ra.load_model(ckpt), ckpt, npz


@pytest.mark.parametrize("option,value,pattern", [
    ("batch_size", 0, "batch_size must be an integer >= 1; got 0"), ("batch_size", -1, "batch_size .* got -1"),
    ("batch_size", 2.5, "batch_size .* got 2.5"), ("batch_size", "8", "batch_size .* got '8'"),
    ("batch_size", True, "batch_size .* got True"), ("batch_size", None, "batch_size .* got None"),
    ("workers", -1, "workers must be an integer >= 0; got -1"), ("workers", 2.5, "workers .* got 2.5"),
    ("workers", "2", "workers .* got '2'"), ("device", "gpu", "unknown device 'gpu'"),
    ("device", 5, "device '5'"), ("device", "meta", "device 'meta' is not supported"),
    ("max_batches", 0, "max_batches must be an integer >= 1; got 0"), ("max_batches", -1, "max_batches .* got -1"),
    ("max_batches", 2.5, "max_batches .* got 2.5"),
    ("feature_dtype", "int8", "feature_dtype 'int8' is not supported; expected one of float32, float16"),
    ("feature_dtype", "float8", "feature_dtype 'float8' is not supported"),
    ("feature_dtype", "float64", "feature_dtype 'float64' is not supported"),
])
def test_extract_options_are_checked_before_any_output(tmp_path, small_model, option, value, pattern):
    lm, _, npz = small_model
    kw = {"workers": 0, option: value}
    with pytest.raises(DataError, match=pattern):
        ra.extract(lm, npz, tmp_path / "o", progress=False, **kw)
    assert not (tmp_path / "o").exists()
    assert next(lm.model.parameters()).device.type == "cpu"      # the caller's model was not moved


def test_extract_feature_dtype_float16_is_kept_integers_refused(tmp_path, small_model):
    lm, _, npz = small_model
    with pytest.raises(DataError, match="feature_dtype <class 'numpy.int8'> is not supported"):
        ra.extract(lm, npz, tmp_path / "i", feature_dtype=np.int8, progress=False, workers=0)
    assert not (tmp_path / "i").exists()
    d = ra.extract(lm, npz, tmp_path / "h", feature_dtype="float16", progress=False, workers=0)
    ref = ra.extract(lm, npz, tmp_path / "f", progress=False, workers=0)
    assert d.features.dtype == np.float16 and ref.features.dtype == np.float32
    np.testing.assert_allclose(d.features, ref.features, rtol=1e-2, atol=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extract_hands_the_callers_model_back_on_its_device(tmp_path, small_model):
    lm, _, npz = small_model
    ra.extract(lm, npz, tmp_path / "c", device="cuda", progress=False, workers=0)
    assert next(lm.model.parameters()).device.type == "cpu"


def test_split_of_a_single_npz_file_is_refused(tmp_path, small_model):
    from repanalysis.train.trainer import write_npz

    lm, _, npz = small_model
    with pytest.raises(DataError, match=r"split 'train' was given but .*digits\.npz is a single data set"):
        ra.extract(lm, npz, tmp_path / "o", split="train", progress=False, workers=0)
    assert not (tmp_path / "o").exists()
    # a folder of <split>.npz files: the split picks its file and is recorded
    with np.load(npz) as z:
        write_npz(tmp_path / "splits" / "train.npz", z["images"][:8], z["labels"][:8], NAMES)
        write_npz(tmp_path / "splits" / "test.npz", z["images"][8:20], z["labels"][8:20], NAMES)
    d = ra.extract(lm, tmp_path / "splits", tmp_path / "d", split="train", progress=False, workers=0)
    assert d.num_samples == 8 and d.meta["split"] == "train"
    # a file or folder that has the split as a word of its name is that split (ILSVRC2012_img_val)
    with np.load(npz) as z:
        write_npz(tmp_path / "mnist_val_n8.npz", z["images"][:8], z["labels"][:8], NAMES)
    d = ra.extract(lm, tmp_path / "mnist_val_n8.npz", tmp_path / "d2", split="val", progress=False, workers=0)
    assert d.meta["split"] == "val"
    with pytest.raises(DataError, match=r"split 'al' was given but .*mnist_val_n8\.npz is a single data set"):
        ra.extract(lm, tmp_path / "mnist_val_n8.npz", tmp_path / "d3", split="al", progress=False, workers=0)
    # a folder of data files: the split names its file, whatever words that file's name has
    d = ra.extract(lm, tmp_path, tmp_path / "d4", split="mnist_val_n8", progress=False, workers=0)
    assert d.num_samples == 8 and d.meta["split"] == "mnist_val_n8"


@pytest.mark.parametrize("which", ["model", "data", "output"])
@pytest.mark.parametrize("value,kind", [(5, "int"), (None, "None"), (["x.npz"], "list"), (b"/tmp/x", "bytes")])
def test_extract_path_arguments_must_be_paths(tmp_path, small_model, which, value, kind):
    lm, _, npz = small_model
    args = {"model": lm, "data": npz, "output": tmp_path / "o"}
    args[which] = value
    what = {"model": "checkpoint", "data": "data set", "output": "output"}[which]
    with pytest.raises(DataError, match=rf"^{what}: expected a file path \(str or os.PathLike\); got {kind}$"):
        ra.extract(args["model"], args["data"], args["output"], progress=False, workers=0)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["d", "d.pt"])
def test_output_under_a_file_is_one_line_and_leaves_nothing(tmp_path, small_model, name):
    lm, _, npz = small_model
    (tmp_path / "file").write_text("a file, not a folder\n")
    out = tmp_path / "file" / name
    with pytest.raises(DumpError, match=rf"^cannot write {out}: Not a directory") as err:
        ra.extract(lm, npz, out, features=False if name.endswith(".pt") else None, progress=False, workers=0)
    assert "\n" not in str(err.value)
    assert (tmp_path / "file").read_text() == "a file, not a folder\n" and sorted(tmp_path.iterdir()) == [
        tmp_path / "file"]


@pytest.mark.parametrize("name", ["d", "d.pt"])
def test_read_only_output_folder_is_one_line_and_leaves_nothing(tmp_path, small_model, monkeypatch, name):
    """(root ignores chmod, so the read-only folder is simulated where the folder is created)."""
    import errno
    import pathlib

    lm, _, npz = small_model
    (tmp_path / "ro").mkdir()
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent == tmp_path / "ro":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    out = tmp_path / "ro" / name
    with pytest.raises(DumpError, match=rf"^cannot write {out}: Permission denied"):
        ra.extract(lm, npz, out, features=False if name.endswith(".pt") else None, progress=False, workers=0)
    assert list((tmp_path / "ro").iterdir()) == []


def test_gather_checkpoint_must_be_a_path():
    from repanalysis.extract.gather import gather_dumps

    with pytest.raises(DataError, match=r"^checkpoint: expected a file path \(str or os.PathLike\); got int$"):
        gather_dumps([], [5], None, data="unused.npz")


def test_logits_only_run_of_a_folder_named_after_model_classes_reextracts(tmp_path, real_checkpoints, real_data,
                                                                          capsys, monkeypatch):
    """A run-folder Dump of an ImageFolder relabelled by the model's class names records class_order
    "model class names"; re-extracting its features must relabel again, not read that text as a file."""
    images, labels = _digits(real_data, 120)
    _image_folder(tmp_path / "named", images, NAMES, labels)
    monkeypatch.setenv("REPANALYSIS_RUNS", str(tmp_path / "runs"))
    ce = real_checkpoints["CE"]
    code, _, err = _cli(["logits", "--checkpoint", str(ce), "--data", str(tmp_path / "named"), "--quiet",
                         "--workers", "0"], capsys)
    assert code == 0, err
    code, _, err = _cli(["features", "--classes", "four,seven,nine", "--out", str(tmp_path / "f")], capsys)
    assert code == 0, err
    feats = load_dump(tmp_path / "runs" / ce.stem / "features")
    logits = load_dump(tmp_path / "runs" / ce.stem / "logits")
    np.testing.assert_array_equal(feats.labels, logits.labels)       # the model's indices both times
    assert (feats.logits.argmax(1) == feats.labels).mean() > 0.85


# --- 12. --overwrite replaces only a Dump, never a folder of the user's files ----------------------------
def test_overwrite_refuses_a_folder_of_user_files_and_keeps_them(tmp_path, capsys, real_checkpoints, real_data):
    from repanalysis.train.trainer import write_npz

    images, labels = _digits(real_data, 20)
    write_npz(tmp_path / "a.npz", images, labels, NAMES)
    out = tmp_path / "userdir"
    out.mkdir()
    (out / "notes.txt").write_text("notes")
    (out / "settings.json").write_text('{"lr": 0.1}')
    args = ["logits", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(tmp_path / "a.npz"), "--output",
            str(out), "--quiet", "--workers", "0"]
    for extra in ([], ["--overwrite"]):
        code, _, err = _cli(args + extra, capsys)
        _one_error_line(code, err, r"output .*userdir holds files that are not a Dump's \(notes.txt, settings.json\);"
                                   r" expected a Dump or an empty folder: choose another --output or empty it$")
        assert "pass --overwrite" not in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "settings.json"]
    assert (out / "notes.txt").read_text() == "notes" and (out / "settings.json").read_text() == '{"lr": 0.1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "userdir"]
    # emptied, the same folder takes the Dump
    for f in out.iterdir():
        f.unlink()
    code, _, err = _cli(args, capsys)
    assert code == 0, err
    np.testing.assert_array_equal(load_dump(out).labels, labels)


# --- 13. a .pt output that is a folder is refused before anything is loaded -------------------------------
def test_pt_output_that_is_a_directory_is_refused_before_loading(tmp_path, capsys, real_checkpoints, real_data,
                                                                monkeypatch):
    from repanalysis.models import loading

    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "dir.pt" / "keep.txt").write_text("x")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for overwrite in (False, True):
        with pytest.raises(DumpError, match=r"^output .*dir\.pt is a directory; expected the path of a \.pt file"):
            ra.extract(real_checkpoints["CE"], real_data["test"], tmp_path / "dir.pt", overwrite=overwrite,
                       progress=False, workers=0)
    monkeypatch.undo()
    code, _, err = _cli(["logits", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                         "--output", str(tmp_path / "dir.pt"), "--overwrite", "--quiet"], capsys)
    _one_error_line(code, err, r"dir\.pt is a directory; expected the path of a \.pt file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.pt"]          # no dir.pt.partial left behind
    assert [p.name for p in (tmp_path / "dir.pt").iterdir()] == ["keep.txt"]


# --- 14. an interrupted .pt run: messages name the .pt; --overwrite replaces its unfinished extraction ------
def test_interrupted_pt_run_of_other_data_is_named_by_its_pt_and_overwritten_in_place(tmp_path, capsys,
                                                                                     real_checkpoints, real_data):
    from repanalysis.train.trainer import write_npz

    images, labels = _digits(real_data, 60)
    write_npz(tmp_path / "a.npz", images[:30], labels[:30], NAMES)
    write_npz(tmp_path / "b.npz", images, labels, NAMES)
    ck, out = real_checkpoints["CE"], tmp_path / "out.pt"
    part = _extract(ck, tmp_path / "a.npz", out, batch_size=10, max_batches=1)     # interrupted after 10 rows
    assert not part.complete and part.num_samples == 10
    args = ["logits", "--checkpoint", str(ck), "--data", str(tmp_path / "b.npz"), "--output", str(out), "--quiet",
            "--workers", "0", "--batch-size", "10"]
    code, _, err = _cli(args, capsys)
    _one_error_line(code, err, rf"^error: output {out} has an unfinished extraction that cannot be resumed "
                               r"\(a Dump of a different run: other data\); pass --overwrite to start it again$")
    assert ".partial" not in err
    # an --overwrite run interrupted in turn keeps its rows in out.pt.partial (no nested staging folder) ...
    part = _extract(ck, tmp_path / "b.npz", out, batch_size=10, max_batches=2, overwrite=True)
    assert part.num_samples == 20 and sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz",
                                                                                      "out.pt.partial"]
    # ... and is resumed by the same command
    messages = []
    _extract(ck, tmp_path / "b.npz", out, batch_size=10, overwrite=True, log=messages.append)
    assert any(m.startswith(f"resuming {out} at sample 20") for m in messages), messages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz", "out.pt"]
    obj = torch.load(out, weights_only=True)
    ref = _extract(ck, tmp_path / "b.npz", tmp_path / "ref")
    np.testing.assert_array_equal(obj["labels"].numpy(), labels)
    np.testing.assert_allclose(obj["logits"].numpy(), ref.logits, atol=1e-5)
    # --overwrite of the finished .pt with a stale partial of other data beside it: replaced, nothing left over
    _extract(ck, tmp_path / "a.npz", out, batch_size=10, max_batches=1, overwrite=True)
    code, _, err = _cli(args + ["--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz", "out.pt", "ref"]
    np.testing.assert_allclose(torch.load(out, weights_only=True)["logits"].numpy(), ref.logits, atol=1e-5)


# --- 15. a data folder holding two layouts is refused, not half-read --------------------------------------
def test_data_folder_of_two_layouts_is_refused_naming_both(tmp_path, capsys, real_checkpoints, real_data):
    from repanalysis.train.trainer import write_npz

    images, labels = _digits(real_data, 24)
    mixed = _image_folder(tmp_path / "mixed", images[:12], NAMES, labels[:12])
    write_npz(mixed / "test.npz", images[12:], labels[12:], NAMES)
    args = ["logits", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(mixed), "--quiet", "--workers",
            "0"]
    code, _, err = _cli(args + ["--output", str(tmp_path / "d")], capsys)
    _one_error_line(code, err, r"mixed holds data of 2 layouts: npz: 1 \.npz file\(s\) \(test\.npz\); imagefolder: "
                               r"\d+ sub-folders of images .*pass layout= \(--layout\) npz or imagefolder to choose")
    assert not (tmp_path / "d").exists()
    for layout, want in (("npz", labels[12:]), ("imagefolder", None)):
        code, _, err = _cli(args + ["--layout", layout, "--output", str(tmp_path / layout)], capsys)
        assert code == 0, err
        d = load_dump(tmp_path / layout)
        assert d.meta["dataset"]["layout"] == layout and d.num_samples == 12
        if want is not None:
            np.testing.assert_array_equal(d.labels, want)
        else:
            assert all("/" in s for s in d.sample_names())        # the image files, not the npz rows


def test_a_models_error_is_reported_by_its_cause_line():
    # TorchScript: the real error is the last line; anything else (a CUDA error ends with a compile hint): the first
    from repanalysis.extract.runner import _cause

    scripted = RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback of "
                            "TorchScript (most recent call last):\n  File \"code\", line 3\nRuntimeError: Given "
                            "groups=1, weight of size [16, 1, 3, 3], expected input[1, 3, 224, 224] to have 1 "
                            "channels, but got 3 channels instead\n")
    assert _cause(scripted).startswith("Given groups=1") and _cause(scripted).endswith("3 channels instead")
    cuda = RuntimeError("CUDA error: no kernel image is available for execution on the device\nCUDA kernel errors "
                        "might be asynchronously reported\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side "
                        "assertions.\n")
    assert _cause(cuda) == "CUDA error: no kernel image is available for execution on the device"
    scripted_cuda = RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback of "
                                 "TorchScript (most recent call last):\nRuntimeError: " + str(cuda))
    assert _cause(scripted_cuda) == "CUDA error: no kernel image is available for execution on the device"
