"""Box and mask sources: the four formats, mapping through the image's resize and crop, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import repanalysis as ra  # noqa: F401  (applies the torchvision compatibility fix)
from repanalysis.data import boxes as B
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import DataError

PHOTOS = Path(ra.__file__).parent / "data" / "photos"  # shipped as package data


def _mapping(tmp_path, wnids=("n01440764", "n01443537", "n01484850")):
    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_text("".join(f"{w} class {i}\n" for i, w in enumerate(wnids)))
    return path


def test_loc_solution_with_mapping_selects_label_boxes(tmp_path):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\n"
                   "img_1,n01443537 10 20 50 60 n01443537 70 0 99 9 n01484850 0 0 5 5\n"
                   "img_2,n01440764 0 0 100 100\n")
    regions = B.open_regions(csv, None, synset_mapping=_mapping(tmp_path))
    assert regions.has("some/folder/img_1.JPEG") and not regions.has("img_3")
    boxes = regions.original_boxes("img_1", label=1)
    np.testing.assert_array_equal(boxes, [[10, 20, 50, 60], [70, 0, 99, 9]])
    r = regions.region("img_1", 1, (100, 100), (100, 100))
    # union of the two label-1 boxes, pixel centres inside [x0, x1] x [y0, y1]
    expected = np.zeros((100, 100), bool)
    expected[20:60, 10:50] = True
    expected[0:9, 70:99] = True
    np.testing.assert_array_equal(r.mask, expected)
    with pytest.raises(DataError, match="label is n01440764"):
        regions.region("img_1", 0, (100, 100), (100, 100))


def test_wnid_missing_from_mapping(tmp_path):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nimg_1,n09999999 1 1 5 5\n")
    with pytest.raises(DataError, match="n09999999.*not in"):
        B.open_regions(csv, synset_mapping=_mapping(tmp_path))


def test_boxes_follow_resize_and_crop(tmp_path):
    # 400x200 image: short side 200 -> 256 (scale 1.28), width 512, centre crop 224 from x = 144
    t = EvalTransform(resolution=224, crop_ratio=0.875)
    flat = tmp_path / "boxes.csv"
    flat.write_text("path,x0,y0,x1,y1\nimages/a.jpg,150,50,250,150\n")
    regions = B.open_regions(flat, t)
    r = regions.region("a.jpg", 0, (400, 200), (224, 224))
    x0, y0, x1, y1 = 150 * 1.28 - 144, 50 * 1.28 - 16, 250 * 1.28 - 144, 150 * 1.28 - 16
    np.testing.assert_allclose(r.boxes, [[x0, y0, x1, y1]])
    cols = np.flatnonzero(r.mask.any(0))
    rows = np.flatnonzero(r.mask.any(1))
    assert cols.min() == int(np.ceil(x0 - 0.5)) and cols.max() == int(np.floor(x1 - 0.5))
    assert rows.min() == int(np.ceil(y0 - 0.5)) and rows.max() == int(np.floor(y1 - 0.5))


def test_box_outside_image_is_refused(tmp_path):
    flat = tmp_path / "boxes.csv"
    flat.write_text("a.jpg,10,10,500,50\n")
    regions = B.open_regions(flat, None)
    with pytest.raises(DataError, match="outside the 400x300 image"):
        regions.region("a", 0, (400, 300), (300, 400))


def test_voc_xml_folder(tmp_path):
    xml = """<annotation><filename>ILSVRC2012_val_00000001</filename><size><width>500</width>
    <height>375</height></size><object><name>n01751748</name><bndbox><xmin>111</xmin><ymin>108</ymin>
    <xmax>441</xmax><ymax>193</ymax></bndbox></object><object><name>n01751748</name><bndbox><xmin>1</xmin>
    <ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>"""
    (tmp_path / "ILSVRC2012_val_00000001.xml").write_text(xml)
    got = B.load_boxes(tmp_path)
    assert got == {"ILSVRC2012_val_00000001": [("n01751748", 111, 108, 441, 193), ("n01751748", 1, 2, 3, 4)]}


def test_png_masks_go_through_the_image_geometry(tmp_path):
    mask = np.zeros((200, 400), np.uint8)
    mask[50:150, 150:250] = 255
    Image.fromarray(mask).save(tmp_path / "a.png")
    t = EvalTransform(resolution=224, crop_ratio=0.875)
    r = B.open_regions(tmp_path, t).region("x/a.jpg", 0, (400, 200), (224, 224))
    assert r.boxes is None and r.mask.shape == (224, 224)
    # nearest-neighbour resize of the mask, then the crop: same pixels as resizing it by hand
    by_hand = np.asarray(Image.fromarray(mask).resize((512, 256), Image.NEAREST))[16:240, 144:368] > 0
    np.testing.assert_array_equal(r.mask, by_hand)
    with pytest.raises(DataError, match="expected the same size"):
        B.open_regions(tmp_path, t).region("a", 0, (300, 200), (224, 224))


def test_bundled_photo_annotations_are_consistent():
    regions = B.open_regions(PHOTOS / "LOC_val_solution.csv", synset_mapping=PHOTOS / "LOC_synset_mapping.txt")
    assert len(regions) >= 3
    wnids, _ = B.read_synset_mapping(PHOTOS / "LOC_synset_mapping.txt")
    assert len(wnids) == 1000 and wnids[281] == "n02123045"  # tabby, in ImageNet-1k order


@pytest.mark.parametrize("text", ["a.jpg,1,2,3\n", "a.jpg,1,2,x,4\nb.jpg,1,2,3,4\nc.jpg,1,y,3,4\n", ""])
def test_malformed_flat_list(tmp_path, text):
    flat = tmp_path / "boxes.csv"
    flat.write_text(text)
    with pytest.raises(DataError):
        B.load_boxes(flat)


def test_foreground_boxes_are_tight():
    images = np.zeros((3, 10, 12), np.uint8)
    images[0, 2:5, 3:9] = 200
    images[0, 7, 10] = 40          # below 0.3 * 200: not foreground
    images[1, 0, 11] = 9           # a single bright pixel in the corner
    names = ["test/0", "test/1", "test/2"]
    got = B.foreground_boxes(images, names)
    assert got == {"0": [(None, 3.0, 2.0, 9.0, 5.0)], "1": [(None, 11.0, 0.0, 12.0, 1.0)]}  # image 2 is blank
    r = B.BoxRegions(got).region("test/0", 0, (12, 10), (10, 12))
    np.testing.assert_array_equal(r.mask, images[0] == 200)


def test_overlay_draws_boxes_up_to_the_image_border():
    # a box round the whole crop (reaching past it on every side) is outlined just inside the image's border;
    # one wholly outside the crop is not drawn; one inside is drawn as it is
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from repanalysis.analyze.cam import CamExample
    from repanalysis.plot.cam import plot_cam_overlay

    boxes = np.array([[-80.0, -16.0, 257.0, 240.0], [230.0, 10.0, 300.0, 50.0], [10.0, 20.0, 60.0, 90.0]])
    example = CamExample(name="a.png", image=np.zeros((224, 224, 3), np.uint8), cam=np.zeros((224, 224), np.float16),
                         region=np.ones((224, 224), bool), boxes=boxes, label=0, target=0, pred=0, precision=1.0,
                         recall=1.0)
    ax = plot_cam_overlay(example)
    rects = [(r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in ax.patches if isinstance(r, Rectangle)]
    inset = 2.24
    assert rects == [pytest.approx((inset, inset, 224 - 2 * inset, 224 - 2 * inset)), (10.0, 20.0, 50.0, 70.0)]
    plt.close("all")
