"""MaxBoxAcc / MaxBoxAccV2 / Top-1 Loc against a hand-worked case and a brute-force implementation."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from repanalysis.analyze import boxacc as B


def _brute(cam, gt, thresholds):
    """Per threshold: label CAM >= tau (8-connected), box per component from its pixels, IoU by loops."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    v1, v2 = [], []
    for tau in thresholds:
        labels, n = ndimage.label(cam >= tau, structure=np.ones((3, 3)))
        best, largest, largest_size = 0.0, 0.0, -1
        for k in range(1, n + 1):
            rows, cols = np.nonzero(labels == k)
            box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            score = max(iou(box, g) for g in gt)
            best = max(best, score)
            if rows.size > largest_size:
                largest, largest_size = score, rows.size
        v1.append(largest)
        v2.append(best)
    return np.array(v1), np.array(v2)


def test_hand_worked_two_blobs():
    cam = np.zeros((8, 8), np.float32)
    cam[0:3, 0:3] = 0.9          # the larger blob, off the object
    cam[5:7, 5:7] = 0.6          # the smaller blob, exactly the object's box
    gt = np.array([[5, 5, 7, 7]])
    v1, v2 = B.image_box_ious(cam, gt, [0.0, 0.5, 0.7])
    # tau 0: the whole image (IoU 4/64); tau 0.5: v1 takes the larger blob (IoU 0), v2 the object's (1); tau 0.7: 0
    np.testing.assert_allclose(v1, [4 / 64, 0, 0])
    np.testing.assert_allclose(v2, [4 / 64, 1, 0])
    ious, ious_v2 = B.box_ious(cam[None].repeat(2, 0), [gt, None], [0.0, 0.5, 0.7])
    assert np.isnan(ious[1]).all()
    acc = B.max_box_acc(ious, [0.0, 0.5, 0.7])
    assert acc.value == 0.0 and acc.threshold == 0.0
    assert B.max_box_acc(ious_v2, [0.0, 0.5, 0.7], 0.5).value == 1.0
    # v2 = mean over delta 0.3 / 0.5 / 0.7 of 1.0 (tau 0.5 reaches IoU 1)
    assert B.max_box_acc_v2(ious_v2, [0.0, 0.5, 0.7]) == 1.0


def test_matches_brute_force_on_random_cams_and_boxes():
    rng = np.random.default_rng(0)
    thr = np.linspace(0, 1, 21)
    cams, boxes = [], []
    for _ in range(12):
        cam = ndimage.gaussian_filter(rng.random((24, 20)), 1.5)
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        cams.append(cam.astype(np.float32))
        m = rng.integers(1, 3)
        x0, y0 = rng.integers(0, 15, m), rng.integers(0, 18, m)
        boxes.append(np.stack([x0, y0, x0 + rng.integers(2, 6, m), y0 + rng.integers(2, 7, m)], 1))
    v1, v2 = B.box_ious(np.stack(cams), boxes, thr)
    ref = [_brute(c, b, thr.astype(np.float32)) for c, b in zip(cams, boxes)]
    r1, r2 = np.stack([r[0] for r in ref]), np.stack([r[1] for r in ref])
    np.testing.assert_allclose(v1, r1, atol=1e-12)
    np.testing.assert_allclose(v2, r2, atol=1e-12)
    correct = rng.random(12) < 0.7
    for delta in (0.3, 0.5, 0.7):
        hits = (r1 >= delta).mean(0)
        acc = B.max_box_acc(v1, thr, delta)
        assert acc.value == hits.max() and acc.index == int(np.argmax(hits))
    assert B.max_box_acc_v2(v2, thr) == np.mean([(r2 >= d).mean(0).max() for d in (0.3, 0.5, 0.7)])
    best = int(np.argmax((r1 >= 0.5).mean(0)))
    summary = B.box_accuracy(v1, v2, thr, correct)
    assert summary["top1_loc"] == ((r1[:, best] >= 0.5) & correct).mean()
    assert summary["box_threshold"] == thr[best]
