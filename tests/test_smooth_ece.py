"""Smooth ECE against relplot and the debiased L2 calibration error against uncertainty-calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repanalysis.analyze.calibration import (debiased_l2_ece, debiased_l2_ece_binary, smooth_ece, smooth_ece_at,
                                             smooth_ece_binary)
from repanalysis.errors import DataError

relplot = pytest.importorskip("relplot")
cal_utils = pytest.importorskip("calibration.utils")


def sample(n, seed, power=1.5, low=0.3):
    rng = np.random.default_rng(seed)
    c = rng.uniform(low, 1, n)
    o = (rng.uniform(size=n) < c ** power).astype(float)
    return c, o


@pytest.mark.parametrize("n, seed, power", [(30, 0, 1.5), (1000, 1, 1.5), (5000, 2, 3.0), (5000, 3, 1.0)])
def test_smooth_ece_matches_relplot(n, seed, power):
    c, o = sample(n, seed, power)
    value, sigma = smooth_ece_binary(c, o, return_bandwidth=True)
    want, want_sigma = relplot.smECE(c, o, return_width=True)
    assert sigma == want_sigma
    assert value == pytest.approx(want, abs=1e-8)
    for s in (0.02, 0.1, 0.5):
        assert smooth_ece_at(c, o, s) == pytest.approx(relplot.smECE_sigma(c, o, s), abs=1e-8)


def test_smooth_ece_of_logits_is_top_label():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 10, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (2000,), generator=g)
    p = torch.softmax(z, 1)
    conf, correct = p.amax(1).numpy(), (p.argmax(1) == y).numpy().astype(float)
    assert smooth_ece(z, y) == pytest.approx(relplot.smECE(conf, correct), abs=1e-8)
    assert debiased_l2_ece(z, y) == pytest.approx(
        cal_utils.lower_bound_scaling_ce(p.numpy(), y.numpy(), p=2, debias=True, num_bins=15, mode="top-label"),
        abs=1e-12)


@pytest.mark.parametrize("n, bins, seed", [(10, 15, 0), (100, 15, 1), (3001, 15, 2), (3000, 7, 3), (500, 1, 4)])
def test_debiased_l2_matches_uncertainty_calibration(n, bins, seed):
    c, o = sample(n, seed)
    for debias in (True, False):
        want = cal_utils.lower_bound_scaling_ce(c, o.astype(int), p=2, debias=debias, num_bins=bins, mode="top-label")
        assert debiased_l2_ece_binary(c, o, bins, debias=debias) == pytest.approx(want, abs=1e-12)


def test_debiased_l2_with_ties_matches():
    rng = np.random.default_rng(5)
    c = rng.integers(5, 10, 400) / 10.0                      # many equal confidences: merged bin edges
    o = (rng.uniform(size=400) < c).astype(float)
    want = cal_utils.lower_bound_scaling_ce(c, o.astype(int), p=2, debias=True, num_bins=15, mode="top-label")
    assert debiased_l2_ece_binary(c, o, 15) == pytest.approx(want, abs=1e-12)


def test_debiasing_lowers_the_estimate_of_a_calibrated_model():
    c, _ = sample(20000, 7)
    o = (np.random.default_rng(8).uniform(size=c.size) < c).astype(float)   # calibrated
    assert debiased_l2_ece_binary(c, o) < debiased_l2_ece_binary(c, o, debias=False)
    assert debiased_l2_ece_binary(c, o) < 0.01


def test_bad_input():
    with pytest.raises(DataError, match="0 or 1"):
        smooth_ece_binary([0.5, 0.6], [0, 2])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        debiased_l2_ece_binary([0.5, 1.6], [0, 1])
    with pytest.raises(DataError, match="same length"):
        smooth_ece_binary([0.5, 0.6], [0])
