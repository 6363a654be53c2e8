"""Risk-coverage, AURC and E-AURC against brute force, a hand-worked case, ties, real Dumps and the CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from repanalysis.analyze.selective import (SelectiveResult, aurc, eaurc, optimal_aurc, risk_coverage,
                                           selective_dumps, selective_prediction)
from repanalysis.errors import DataError


def brute_aurc(conf, err):
    """Mean over k = 1..N of the expected risk of the top k, ties broken uniformly at random (brute force:
    every coverage, and inside a tie group the expected number of errors among the first j of its m)."""
    conf, err = np.asarray(conf, float), np.asarray(err, float)
    n = conf.size
    risks = []
    for k in range(1, n + 1):
        order = np.argsort(-conf, kind="stable")
        threshold = conf[order[k - 1]]
        above = conf > threshold
        tied = conf == threshold
        j = k - above.sum()                          # how many of the tied group are answered
        expected_errors = err[above].sum() + j * err[tied].mean()
        risks.append(expected_errors / k)
    return float(np.mean(risks)), np.array(risks)


def test_hand_worked_case():
    # scores 0.9, 0.8, 0.7, 0.6; errors 0, 1, 0, 1 -> risks 0, 1/2, 1/3, 2/4; AURC = (0 + .5 + 1/3 + .5) / 4
    cov, risk = risk_coverage([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1])
    assert np.allclose(cov.numpy(), [0.25, 0.5, 0.75, 1.0])
    assert np.allclose(risk.numpy(), [0, 0.5, 1 / 3, 0.5])
    assert aurc([0.6, 0.9, 0.7, 0.8], [1, 0, 0, 1]) == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)
    r = 0.5
    assert eaurc([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1]) == pytest.approx(
        (0 + 0.5 + 1 / 3 + 0.5) / 4 - (r + (1 - r) * math.log(1 - r)))


def test_ties_are_averaged():
    # all four tied: every coverage has the expected risk 1/2
    _, risk = risk_coverage([1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1])
    assert np.allclose(risk.numpy(), 0.5)
    # a tie group in the middle: 0.9 right; (0.5, 0.5) one wrong; 0.1 wrong
    _, risk = risk_coverage([0.5, 0.9, 0.1, 0.5], [1, 0, 1, 0])
    assert np.allclose(risk.numpy(), [0, 0.5 / 2, 1 / 3, 2 / 4])
    # the value does not depend on the order of the samples
    rng = np.random.default_rng(1)
    conf = rng.integers(0, 5, 200).astype(float)
    err = rng.integers(0, 2, 200)
    p = rng.permutation(200)
    assert aurc(conf, err) == pytest.approx(aurc(conf[p], err[p]), abs=1e-14)


@pytest.mark.parametrize("n, levels", [(1, None), (7, None), (500, None), (500, 6), (2000, 40)])
def test_against_brute_force(n, levels):
    rng = np.random.default_rng(n)
    conf = rng.normal(size=n) if levels is None else rng.integers(0, levels, n).astype(float)
    err = (rng.uniform(size=n) < 0.3).astype(float)
    want, want_risk = brute_aurc(conf, err)
    _, risk = risk_coverage(conf, err)
    assert np.allclose(risk.numpy(), want_risk, atol=1e-12)
    assert aurc(conf, err) == pytest.approx(want, abs=1e-12)
    assert eaurc(conf, err) == pytest.approx(want - optimal_aurc(err.mean()), abs=1e-12)


def test_optimal_ranking_and_edges():
    n, m = 1000, 100
    err = np.r_[np.zeros(n - m), np.ones(m)]
    conf = -np.arange(n, dtype=float)                         # every error last: the optimal ranking
    assert 0 <= eaurc(conf, err) < 5 * math.log(n) / n
    assert optimal_aurc(0.0) == 0.0 and optimal_aurc(1.0) == 1.0
    assert aurc([0.1, 0.2], [0, 0]) == 0.0
    with pytest.raises(DataError, match="same length"):
        risk_coverage([0.1, 0.2], [0])
    with pytest.raises(DataError, match="NaN or inf"):
        risk_coverage([0.1, float("nan")], [0, 1])


def test_selective_prediction_uses_confidence_scores():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (300,), generator=g)
    h = torch.rand(300, 8, generator=g, dtype=torch.float64)
    res = selective_prediction(z, y, h, name="m")
    err = (z.argmax(1) != y).numpy().astype(float)
    p = torch.softmax(z, 1).amax(1).numpy()
    assert res.aurc["max_softmax"] == pytest.approx(brute_aurc(p, err)[0], abs=1e-12)
    assert res.aurc["max_logit"] == pytest.approx(brute_aurc(z.amax(1).numpy(), err)[0], abs=1e-12)
    assert res.aurc["feature_l1"] == pytest.approx(brute_aurc(h.abs().sum(1).numpy(), err)[0], abs=1e-12)
    assert res.error_rate == pytest.approx(err.mean())
    frame = res.to_frame()
    assert set(frame["metric"]) == {"error_rate", "aurc_optimal", "aurc", "eaurc"}
    assert len(frame) == 2 + 2 * 3
    d = res.to_dict(curves=True)
    assert len(d["coverage"]) == 300 and set(d["risk"]) == {"max_softmax", "max_logit", "feature_l1"}
    with pytest.warns(RuntimeWarning, match="feature_l1"):
        assert set(selective_prediction(z, y).aurc) == {"max_softmax", "max_logit"}


@pytest.mark.slow
def test_real_dumps_and_cli(real_dumps, tmp_path, capsys):
    from _cli import run_cli

    dumps = [real_dumps[k]["test"] for k in ("CE", "LS", "MaxSup")]
    results = selective_dumps(dumps, names=["CE", "LS", "MaxSup"])
    assert all(isinstance(r, SelectiveResult) for r in results)
    for d, r in zip(dumps, results):
        z = np.asarray(d.logits, dtype=np.float64)
        err = (z.argmax(1) != np.asarray(d.labels)).astype(float)
        p = np.exp(z - z.max(1, keepdims=True))
        conf = 1 / p.sum(1)
        assert r.aurc["max_softmax"] == pytest.approx(brute_aurc(conf, err)[0], abs=1e-9)
        assert 0 <= r.aurc["max_softmax"] <= r.error_rate + 1e-12
    out = tmp_path / "sel"
    paths = [str(d.path) for d in dumps]
    code, stdout, stderr = run_cli(["selective", *paths, "--names", "CE,LS,MaxSup", "--out", str(out), "--json"],
                                   capsys)
    assert code == 0, stderr
    shown = json.loads(stdout)
    saved = json.loads((out / "selective.json").read_text())
    assert (out / "risk_coverage.png").exists() and (out / "risk_coverage.pdf").exists()
    for r, m, s in zip(results, shown["models"], saved["models"]):
        assert m["name"] == r.name
        for score in ("max_softmax", "max_logit", "feature_l1"):
            assert m["aurc"][score] == pytest.approx(r.aurc[score], abs=1e-12)
            assert s["eaurc"][score] == pytest.approx(r.eaurc[score], abs=1e-12)
    code, stdout, _ = run_cli(["selective", *paths, "--names", "CE,LS,MaxSup", "--out", str(out)], capsys)
    assert code == 0 and "AURC" in stdout and "MaxSup" in stdout


LOGIT_SCORES = ("max_softmax", "max_logit")


def test_nonfinite_rows_are_excluded_and_chunks_agree(monkeypatch):
    import repanalysis.analyze.selective as S

    g = torch.Generator().manual_seed(3)
    z = torch.randn(257, 4, generator=g)
    y = torch.randint(0, 4, (257,), generator=g)
    whole = selective_prediction(z, y, scores=LOGIT_SCORES)
    monkeypatch.setattr(S, "_CHUNK_ELEMENTS", 40)             # 10 rows per chunk
    chunked = selective_prediction(z, y, scores=LOGIT_SCORES)
    assert chunked.aurc == pytest.approx(whole.aurc, abs=1e-15)
    z[5, 1] = float("nan")
    z[9, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="2 of 257"):
        res = selective_prediction(z, y, scores=LOGIT_SCORES)
    keep = torch.ones(257, dtype=torch.bool)
    keep[[5, 9]] = False
    assert res.n_excluded == 2 and res.num_samples == 255
    assert res.aurc["max_logit"] == pytest.approx(selective_prediction(z[keep], y[keep], scores=LOGIT_SCORES).aurc["max_logit"], abs=1e-15)
    with pytest.raises(DataError, match="features must be"):
        selective_prediction(z, y, torch.ones(3, 2))
    with pytest.raises(DataError, match="unknown confidence"):
        selective_prediction(z, y, scores=("entropy",))
