"""Grad-CAM bad input: boxes matched by path (not by bare file name), non-spatial target layers, binary box
files, the same checkpoint twice. Library errors are DataError / ConfigError; the CLI prints one line, exits 2."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import repanalysis as ra
from repanalysis.analyze import cam as C
from repanalysis.data import boxes as B
from repanalysis.errors import ConfigError, DataError
from _cli import run_cli

NAMES = ["one/0.png", "one/1.png", "zero/0.png", "zero/1.png"]  # ImageFolder order: classes sorted, one = 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An ImageFolder of 28x28 digits-like squares in two class folders with the same file names, and an
    untrained (seeded) SmallCNN checkpoint in the demo format: (folder, checkpoint)."""
    from repanalysis.train.nets import SmallCNN
    from repanalysis.train.trainer import save_checkpoint

    root = tmp_path_factory.mktemp("gc_tiny")
    data = root / "data"
    for i, name in enumerate(NAMES):
        img = np.zeros((28, 28), np.uint8)
        img[4 + i:16 + i, 6:18] = 255
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(data / name)
    torch.manual_seed(0)
    ckpt = save_checkpoint(SmallCNN(num_classes=10, in_chans=1, width=4).eval(), root / "tiny.pth", loss="ce")
    return data, ckpt


def _args(tiny, boxes, out, *extra):
    data, ckpt = tiny
    return ["gradcam", "--checkpoint", str(ckpt), "--data", str(data), "--boxes", str(boxes), "--workers", "0",
            "--show", "2", "--out", str(out), *extra]


def _flat(tmp_path, text, name="boxes.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- 1. boxes belong to the image at that path, not to every image of that file name -------------------------

def test_box_with_a_folder_fits_only_that_image(tmp_path):
    regions = B.open_regions(_flat(tmp_path, "zero/0.png,4,4,24,24\n"), None)
    assert not regions.has("one/0.png") and regions.has("zero/0.png")  # before binding too
    np.testing.assert_array_equal(regions.bind(NAMES), [False, False, True, False])
    assert not regions.has("one/0.png")
    with pytest.raises(DataError, match="no box for image one/0.png"):
        regions.region("one/0.png", 0, (28, 28), (28, 28))
    assert regions.region("zero/0.png", 1, (28, 28), (28, 28)).mask.sum() == 20 * 20
    # a longer path that ends in the image's relative path (absolute, or with the split folder) also fits
    longer = B.open_regions(_flat(tmp_path, "/data/val/zero/0.png,4,4,24,24\n", "abs.csv"), None)
    np.testing.assert_array_equal(longer.bind(NAMES), [False, False, True, False])


def test_bare_name_in_several_folders_is_ambiguous(tmp_path):
    regions = B.open_regions(_flat(tmp_path, "0.png,4,4,24,24\n"), None)
    with pytest.raises(DataError, match=r"'0.png' fits 2 images \(one/0.png, zero/0.png\); expected a path relative"):
        regions.bind(NAMES)
    with pytest.raises(DataError, match="fits several entries"):
        B.open_regions(_flat(tmp_path, "zero/0.png,1,1,5,5\none/0.png,1,1,5,5\n", "two.csv"), None).has("0.png")
    # a bare name that is unique still fits, in whatever folder
    unique = B.open_regions(_flat(tmp_path, "1.png,4,4,24,24\n", "one.csv"), None)
    with pytest.raises(DataError, match="fits 2 images"):
        unique.bind(NAMES)
    np.testing.assert_array_equal(unique.bind(["a/1.png", "a/2.png"]), [True, False])


def test_loc_image_ids_and_array_indices_still_match(tmp_path):
    loc = _flat(tmp_path, "ImageId,PredictionString\nILSVRC2012_val_00000293,n01440764 1 2 30 40\n", "LOC.csv")
    regions = B.open_regions(loc, None, class_wnids=["n01440764"])
    names = ["n01440764/ILSVRC2012_val_00000293.JPEG", "n01440764/ILSVRC2012_val_00000294.JPEG"]
    np.testing.assert_array_equal(regions.bind(names), [True, False])
    np.testing.assert_array_equal(regions.original_boxes(names[0], 0), [[1, 2, 30, 40]])
    # .npz data: samples "<split>/<i>", boxes keyed by the sample index
    npz = B.BoxRegions({"3": [(None, 1, 1, 9, 9)], "test/5": [(None, 2, 2, 8, 8)]})
    np.testing.assert_array_equal(npz.bind([f"test/{i}" for i in range(7)]), [i in (3, 5) for i in range(7)])
    # the digits' ink boxes of two folders with the same file names keep their folders
    got = B.foreground_boxes(np.ones((2, 4, 4)), ["a/0.png", "b/0.png"])
    assert sorted(got) == ["a/0.png", "b/0.png"]


def test_png_masks_in_class_folders_and_ambiguous_flat_masks(tmp_path):
    mask = np.zeros((28, 28), np.uint8)
    mask[2:6, 3:9] = 255
    (tmp_path / "nested" / "zero").mkdir(parents=True)
    Image.fromarray(mask).save(tmp_path / "nested" / "zero" / "0.png")
    regions = B.open_regions(tmp_path / "nested", None)
    np.testing.assert_array_equal(regions.bind(NAMES), [False, False, True, False])
    assert regions.region("zero/0.png", 1, (28, 28), (28, 28)).mask.sum() == 24
    (tmp_path / "flat").mkdir()
    Image.fromarray(mask).save(tmp_path / "flat" / "0.png")
    with pytest.raises(DataError, match="mask for '0.png' fits 2 images"):
        B.open_regions(tmp_path / "flat", None).bind(NAMES)


def test_localise_dataset_counts_only_the_boxed_image(tiny, tmp_path):
    data, ckpt = tiny
    lm = ra.load_model(ckpt)
    ds = ra.open_dataset(data, transform=lm.transform)
    assert list(ds.samples) == NAMES
    regions = B.open_regions(_flat(tmp_path, "zero/0.png,4,4,24,24\n"), lm.transform)
    res = C.localise_dataset(lm.model, ds, regions, lm.transform, keep=1)
    assert res.sample_names == ["zero/0.png"] and res.skipped == ["one/0.png", "one/1.png", "zero/1.png"]
    with pytest.raises(DataError, match="^3 of 4 images have no box"):
        C.localise_dataset(lm.model, ds, regions, lm.transform, strict=True)
    # a folder the data set does not have fits nothing, even though one/0.png and zero/0.png exist
    other = B.open_regions(_flat(tmp_path, "two/0.png,4,4,24,24\n", "two.csv"), lm.transform)
    with pytest.raises(DataError, match="none of the 4 images .*first entry 'two/0.png', first image 'one/0.png'"):
        C.localise_dataset(lm.model, ds, other, lm.transform)


def test_cli_box_for_one_folder_scores_one_image(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), out), capsys)
    assert code == 0, stderr
    with open(out / "gradcam_per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the checkpoint records the digit class names, so folder "zero" is the model's class 0 (not rank 1 of
    # the sorted folders one/, zero/)
    assert [(r["image"], r["label"]) for r in rows] == [("zero/0.png", "0")]
    assert json.loads((out / "gradcam.json").read_text())["models"][0]["summary"]["skipped"] == 3

    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), tmp_path / "o2", "--strict"),
                              capsys)
    assert code == 2 and "error: 3 of 4 images have no box or mask (first: one/0.png)" in stderr
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,24,24,4,4\n", "rev.csv"), tmp_path / "o3"),
                              capsys)
    assert code == 2 and "error: zero/0.png (boxes from" in stderr and "corners reversed" in stderr
    assert "one/0.png" not in stderr and not (tmp_path / "o3").exists()
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,nan\n", "nan.csv"), tmp_path / "o5"),
                              capsys)
    assert code == 2 and "(4, 4, 24, nan) has a non-finite coordinate; expected four finite numbers" in stderr
    assert not (tmp_path / "o5").exists()
    # --topk replaces --threshold: both given is refused, not silently half-ignored
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), tmp_path / "o6", "--topk", "0.2",
                                    "--threshold", "0.9"), capsys)
    assert code == 2 and "--topk 0.2 and --threshold 0.9 both choose the CAM mask; expected one of them" in stderr
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), tmp_path / "o7", "--topk", "0.2"),
                              capsys)
    assert code == 0, stderr
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "0.png,4,4,24,24\n", "bare.csv"), tmp_path / "o4"), capsys)
    assert code == 2 and "'0.png' fits 2 images (one/0.png, zero/0.png)" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "o4").exists()


# --- 2. a target layer without a feature map -------------------------------------------------------------

def test_linear_or_pooled_layer_is_refused_naming_suitable_layers(tiny, tmp_path, capsys):
    model = ra.load_model(tiny[1]).model
    example = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ConfigError, match=r"layer 'fc' \(Linear\) outputs shape \(1, 10\).*suitable layers "
                                          r"\(last first\): features, features\.2"):
        C.resolve_cam_layer(model, "fc", example)
    with pytest.raises(ConfigError, match=r"layer 'pool' .*1x1 map"):
        C.resolve_cam_layer(model, "pool", example)
    assert C.resolve_cam_layer(model, "features.1", example).name == "features.1"
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), tmp_path / "o", "--layer", "fc"),
                              capsys)
    assert code == 2 and "error: layer 'fc' (Linear)" in stderr and "suitable layers" in stderr
    assert "internal error" not in stderr and not (tmp_path / "o").exists()


# --- 3. a binary file as the box source --------------------------------------------------------------------

def test_binary_box_file_is_refused(tiny, tmp_path, capsys):
    with pytest.raises(DataError, match="is binary, not text"):
        B.load_boxes(tiny[1])
    png = tmp_path / "mask.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png)
    with pytest.raises(DataError, match="single PNG image; masks must be given as a folder"):
        B.open_regions(png)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\xe9.png,1,1,5,5\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        B.load_boxes(latin)
    code, _, stderr = run_cli(_args(tiny, tiny[1], tmp_path / "o"), capsys)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: box file ")
    assert "is binary, not text" in stderr and "internal error" not in stderr


# --- 4. the same checkpoint twice ----------------------------------------------------------------------------

def test_same_checkpoint_twice_is_refused(tiny, tmp_path, capsys):
    args = _args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), tmp_path / "o") + ["--checkpoint", str(tiny[1])]
    code, _, stderr = run_cli(args, capsys)
    assert code == 2 and "error: model names must be distinct: two checkpoints are both named 'tiny'" in stderr
    assert not (tmp_path / "o").exists()
    code, _, stderr = run_cli(args + ["--names", "A,A"], capsys)
    assert code == 2 and "error: model names must be distinct: the names give 'A' twice" in stderr
    code, _, stderr = run_cli(args + ["--names", "A,B"], capsys)
    assert code == 0, stderr
    models = json.loads((tmp_path / "o" / "gradcam.json").read_text())["models"]
    assert [m["name"] for m in models] == ["A", "B"]


# --- 5. a NaN threshold is refused before any model loads; BOM-prefixed and repeated-id box files ---------

def test_nan_threshold_refused_before_the_checkpoint_is_read(tiny, tmp_path, capsys, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before --threshold was checked")

    monkeypatch.setattr(ra, "load_model", no_load)
    for bad in ("nan", "1.5", "-0.1"):
        code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), tmp_path / "o",
                                        "--threshold", bad), capsys)
        assert code == 2 and stderr.strip() == f"error: --threshold must lie in [0, 1] (CAMs are min-max " \
                                               f"normalised); got {float(bad)}", stderr
    assert not (tmp_path / "o").exists()


def test_box_files_with_a_byte_order_mark_read_like_plain_utf8(tmp_path):
    loc = "ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 10 20 30 40 n01751748 1 2 3 4 \n"
    flat = "zero/0.png,4,4,24,24\n"
    for text, want in ((loc, {"ILSVRC2012_val_00000001": [("n01751748", 10.0, 20.0, 30.0, 40.0),
                                                           ("n01751748", 1.0, 2.0, 3.0, 4.0)]}),
                       (flat, {"zero/0.png": [(None, 4.0, 4.0, 24.0, 24.0)]})):
        plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
        plain.write_bytes(text.encode("utf-8"))
        bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        assert B.load_boxes(bom) == B.load_boxes(plain)
        assert {k: list(v) for k, v in B.load_boxes(bom).items()} == want


def test_loc_image_id_on_two_rows_keeps_both_rows_boxes(tmp_path):
    from repanalysis.data.imagenet import read_loc_solution

    path = tmp_path / "LOC_val_solution.csv"
    path.write_text("ImageId,PredictionString\n"
                    "ILSVRC2012_val_00000001,n01751748 10 20 30 40 \n"
                    "ILSVRC2012_val_00000002,n01440764 0 0 5 5 \n"
                    "ILSVRC2012_val_00000001,n01751748 50 60 70 80 \n")
    boxes = read_loc_solution(path)
    assert boxes["ILSVRC2012_val_00000001"] == [("n01751748", 10.0, 20.0, 30.0, 40.0),
                                                ("n01751748", 50.0, 60.0, 70.0, 80.0)]
    assert boxes["ILSVRC2012_val_00000002"] == [("n01440764", 0.0, 0.0, 5.0, 5.0)]
    path.write_text("ImageId,PredictionString\n ,n01751748 10 20 30 40 \n")
    with pytest.raises(DataError, match="line 2: empty ImageId"):
        read_loc_solution(path)


def test_cli_figures_are_written_both_or_neither(tiny, tmp_path, capsys):
    # the second figure cannot be written (its PDF path is a folder): nothing of the run is put in place, the
    # JSON and CSV included (they would describe figures that are not there)
    out = tmp_path / "out"
    (out / "gradcam_pr.pdf").mkdir(parents=True)
    code, _, stderr = run_cli(_args(tiny, _flat(tmp_path, "zero/0.png,4,4,24,24\n"), out), capsys)
    assert code == 2 and "cannot write figure" in stderr and "gradcam_pr.pdf" in stderr, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["gradcam_pr.pdf"]           # the folder in the way, alone
