"""Localisation measures against hand-worked cases, brute force and scikit-learn's average precision."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import repanalysis  # noqa: F401
from repanalysis.analyze import localisation as L
from repanalysis.errors import DataError


def _hand_case():
    # 4x4 CAM; region = the 2x2 block at rows 0-1, cols 0-1
    cam = torch.tensor([[1.0, 0.8, 0.6, 0.0],
                        [0.9, 0.2, 0.5, 0.0],
                        [0.0, 0.0, 0.0, 0.0],
                        [0.7, 0.0, 0.0, 0.1]])
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[:2, :2] = True
    return cam, region


def test_hand_worked_precision_recall_f1_iou():
    cam, region = _hand_case()
    s = L.localisation_scores(cam[None], region[None], threshold=0.5)
    # M = {1.0, 0.8, 0.6, 0.9, 0.5, 0.7}: 6 pixels, 3 of them in the 4-pixel region; union = 7
    assert s.precision.item() == pytest.approx(3 / 6)
    assert s.recall.item() == pytest.approx(3 / 4)
    assert s.f1.item() == pytest.approx(2 * 0.5 * 0.75 / 1.25)
    assert s.iou.item() == pytest.approx(3 / 7)
    # energy: inside 1 + .8 + .9 + .2 = 2.9 of total 4.8
    assert s.energy.item() == pytest.approx(2.9 / 4.8)
    assert bool(s.pointing_hit.item()) is True
    assert s.region_fraction.item() == pytest.approx(4 / 16)


def test_nan_safe_empty_mask_and_empty_region():
    cam = torch.zeros(2, 3, 3)
    cam[1, 0, 0] = 1.0
    region = torch.zeros(2, 3, 3, dtype=torch.bool)
    region[0, 1, 1] = True  # image 0: all-zero CAM, non-empty region; image 1: empty region
    s = L.localisation_scores(cam, region, threshold=0.5)
    assert math.isnan(s.precision[0]) and s.recall[0] == 0 and math.isnan(s.f1[0]) and s.iou[0] == 0
    assert s.precision[1] == 0 and math.isnan(s.recall[1]) and math.isnan(s.f1[1]) and s.iou[1] == 0
    assert math.isnan(s.energy[0]) and s.energy[1] == 0
    assert math.isnan(s.sweep.area[1])


def test_f1_zero_when_mask_misses_region():
    cam = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    region = torch.tensor([[[False, False], [False, True]]])
    s = L.localisation_scores(cam, region)
    assert s.precision.item() == 0 and s.recall.item() == 0 and s.f1.item() == 0


def test_boxes_to_mask_pixel_centres():
    mask = L.boxes_to_mask(np.array([[1.0, 1.0, 3.0, 2.0]]), 4, 5)
    expected = np.zeros((4, 5), dtype=bool)
    expected[1, 1:3] = True  # centres x = 1.5, 2.5 in [1, 3]; y = 1.5 in [1, 2]
    np.testing.assert_array_equal(mask.numpy(), expected)
    # union of two boxes, batch with padding
    boxes = torch.tensor([[[0, 0, 1, 1], [3, 3, 4, 4.]], [[0, 0, 4, 4], [0, 0, 0, 0]]])
    valid = torch.tensor([[True, True], [True, False]])
    m = L.boxes_to_mask(boxes, 4, 4, valid)
    assert m[0].sum() == 2 and m[0, 0, 0] and m[0, 3, 3]
    assert m[1].all()


def _brute_scores(cams, regions, tau):
    out = []
    for c, r in zip(cams, regions):
        m = c >= tau
        inter = np.logical_and(m, r).sum()
        p = inter / m.sum() if m.sum() else np.nan
        rec = inter / r.sum() if r.sum() else np.nan
        out.append((p, rec))
    return np.array(out)


def test_threshold_sweep_matches_brute_force_and_sklearn_ap():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    cams = rng.random((5, 12, 10)).astype(np.float32)
    cams[2] = np.round(cams[2] * 4) / 4  # ties
    regions = np.zeros((5, 12, 10), dtype=bool)
    for i in range(5):
        y0, x0 = rng.integers(0, 6, 2)
        regions[i, y0:y0 + 5, x0:x0 + 4] = True
    cams[0] = cams[0] * 0.5 + 0.5 * regions[0]
    taus = np.linspace(0, 1, 21).astype(np.float32)
    sweep = L.threshold_sweep(cams, regions, taus)
    for j, tau in enumerate(taus):
        ref = _brute_scores(cams, regions, tau)
        np.testing.assert_allclose(sweep.precision[:, j].numpy(), ref[:, 0], rtol=1e-12)
        np.testing.assert_allclose(sweep.recall[:, j].numpy(), ref[:, 1], rtol=1e-12)
    # with every distinct CAM value as a threshold the area is sklearn's pixel-level average precision
    for i in range(5):
        uniq = np.unique(cams[i])
        exact = L.threshold_sweep(cams[i:i + 1], regions[i:i + 1], uniq)
        assert exact.area.item() == pytest.approx(average_precision_score(regions[i].ravel(), cams[i].ravel()),
                                                  abs=1e-12)


def test_topk_masks_pick_exactly_the_top_pixels():
    rng = np.random.default_rng(1)
    cams = rng.random((3, 7, 9)).astype(np.float32)
    m = L.topk_masks(cams, 0.1)
    k = math.ceil(0.1 * 63)
    assert (m.reshape(3, -1).sum(1) == k).all()
    for i in range(3):
        top = np.argsort(-cams[i].ravel())[:k]
        assert set(np.flatnonzero(m[i].numpy().ravel())) == set(top)
    regions = np.zeros((3, 7, 9), dtype=bool)
    regions[:, :3] = True
    s = L.localisation_scores(cams, regions, topk=0.1)
    for i in range(3):
        top = np.zeros(63, dtype=bool)
        top[np.argsort(-cams[i].ravel())[:k]] = True
        assert s.precision[i].item() == pytest.approx((top & regions[i].ravel()).sum() / k)


def test_pointing_and_energy_match_numpy():
    rng = np.random.default_rng(2)
    cams = rng.random((6, 8, 8)).astype(np.float32)
    regions = rng.random((6, 8, 8)) > 0.6
    e = L.energy_pointing(cams, regions).numpy()
    np.testing.assert_allclose(e, (cams * regions).sum((1, 2)) / cams.sum((1, 2)), rtol=1e-6)
    hit = L.pointing_hit(cams, regions).numpy()
    expected = [regions[i].ravel()[cams[i].argmax()] for i in range(6)]
    np.testing.assert_array_equal(hit, expected)


@pytest.mark.parametrize("bad", [
    lambda: L.localisation_scores(np.zeros((2, 3, 3)), np.zeros((2, 3, 4), bool)),
    lambda: L.localisation_scores(np.zeros((2, 3, 3)), np.zeros((2, 3, 3), bool), threshold=1.5),
    lambda: L.topk_masks(np.zeros((1, 3, 3)), 0.0),
    lambda: L.threshold_sweep(np.zeros((1, 3, 3)), np.zeros((1, 3, 3), bool), [0.5, 0.2]),
    lambda: L.localisation_scores(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2), bool)),
])
def test_bad_input_raises_data_error(bad):
    with pytest.raises(DataError):
        bad()


@pytest.mark.parametrize("cams", [
    np.array([[[-0.3, -0.5], [-0.5, -0.5]]]),        # energy came out NaN
    5 * np.array([[[1.0, 0.2], [0.0, 0.6]]]),         # precision at tau shifted
    np.array([[[0.0, 1.0 + 1e-6], [0.2, 0.4]]]),
])
def test_cams_outside_0_1_are_refused(cams):
    region = np.array([[[True, False], [False, False]]])
    for call in (lambda: L.localisation_scores(cams, region), lambda: L.energy_pointing(cams, region),
                 lambda: L.threshold_sweep(cams, region), lambda: L.topk_masks(cams, 0.5)):
        with pytest.raises(DataError, match=r"cams must be min-max normalised to \[0, 1\] per image; found values in"):
            call()
    # the bounds themselves are fine
    s = L.localisation_scores(np.array([[[0.0, 1.0], [0.25, 0.5]]]), region)
    assert s.energy.item() == pytest.approx(0.0) and s.precision.item() == 0


def test_no_cams_is_a_data_error():
    for call in (lambda: L.localisation_scores(np.zeros((0, 4, 4)), np.zeros((0, 4, 4), bool)),
                 lambda: L.pointing_hit(np.zeros((2, 0, 4)), np.zeros((2, 0, 4), bool)),
                 lambda: L.topk_masks(np.zeros((0, 3, 3)), 0.5)):
        with pytest.raises(DataError, match=r"no CAMs: expected cams \[N, H, W\] with N, H, W >= 1; got shape"):
            call()


def test_one_2d_cam_is_one_image_for_the_mask_functions():
    rng = np.random.default_rng(3)
    cam = rng.random((5, 6)).astype(np.float32)
    top = L.topk_masks(cam, 0.2)  # ValueError (unpacking the shape) before
    assert top.shape == (5, 6)
    np.testing.assert_array_equal(top.numpy(), L.topk_masks(cam[None], 0.2)[0].numpy())
    assert top.sum() == math.ceil(0.2 * 30) and set(np.flatnonzero(top.numpy())) == set(np.argsort(-cam.ravel())[:6])
    np.testing.assert_array_equal(L.threshold_masks(cam, 0.5).numpy(), cam >= 0.5)
    with pytest.raises(DataError, match=r"cams must be \[N, H, W\]; got shape \(30,\)"):
        L.topk_masks(cam.ravel(), 0.2)
    with pytest.raises(DataError, match="top-k fraction must be a finite number > 0 and <= 1; got 1.5"):
        L.topk_masks(cam, 1.5)


def test_boxes_to_mask_checks_size_and_valid_flags():
    box = np.array([[0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(DataError, match="mask height must be an integer >= 1; got -2"):
        L.boxes_to_mask(box, -2, 4)
    with pytest.raises(DataError, match="mask width must be an integer >= 1; got 2.5"):
        L.boxes_to_mask(box, 4, 2.5)
    boxes = np.zeros((2, 3, 4))
    for valid in (np.ones(4, bool), np.ones((3, 2), bool), np.ones(6, bool)):
        with pytest.raises(DataError, match=r"valid must be \[N, M\] with one flag per box \(2, 3\); got shape"):
            L.boxes_to_mask(boxes, 4, 4, valid)
    # one image: valid [M] marks its boxes
    two = np.array([[0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 4.0, 4.0]])
    m = L.boxes_to_mask(two, 4, 4, [True, False])
    assert m.shape == (4, 4) and m.sum() == 1 and m[0, 0]
