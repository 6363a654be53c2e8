"""Vector scaling and histogram binning: synthetic recovery, a numpy reference, held-out real logits, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repanalysis.analyze.calibration import (HistogramBinning, apply_histogram_binning, apply_vector_scaling,
                                             calibration_report, fit_histogram_binning, fit_vector_scaling,
                                             histogram_binning_confidence, posthoc_calibration, posthoc_dumps)
from repanalysis.errors import DataError


def test_vector_scaling_recovers_a_diagonal_scaling():
    g = torch.Generator().manual_seed(0)
    n, k = 40000, 5
    base = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    w_true = torch.tensor([0.5, 1.0, 1.5, 2.0, 0.8], dtype=torch.float64)
    b_true = torch.tensor([0.3, -0.2, 0.0, 0.1, -0.2], dtype=torch.float64)
    y = torch.multinomial(torch.softmax(base * w_true + b_true, 1), 1, generator=g).squeeze(1)
    vs = fit_vector_scaling(base, y)
    assert vs.converged and vs.nll_after < vs.nll_before
    assert np.allclose(vs.weight, w_true.numpy(), atol=0.05)
    b = vs.bias - vs.bias.mean()                                 # the bias is defined up to a constant
    assert np.allclose(b, (b_true - b_true.mean()).numpy(), atol=0.05)
    out = apply_vector_scaling(base.numpy(), vs)
    assert isinstance(out, np.ndarray) and np.allclose(out, base.numpy() * vs.weight + vs.bias)


def numpy_histogram_binning(val_conf, val_correct, test_conf, m):
    """Equal-width (lo, hi] bins, 0 in the first; per-bin accuracy; empty bins map to their centre."""
    def bins(c):
        return np.clip(np.ceil(c * m).astype(int) - 1, 0, m - 1)
    vb = bins(val_conf)
    values = np.array([val_correct[vb == j].mean() if (vb == j).any() else (j + 0.5) / m for j in range(m)])
    return values, values[bins(test_conf)]


def test_histogram_binning_equals_numpy():
    g = torch.Generator().manual_seed(1)
    zv = torch.randn(3000, 10, generator=g, dtype=torch.float64) * 2.5
    yv = torch.randint(0, 10, (3000,), generator=g)
    zt = torch.randn(2000, 10, generator=g, dtype=torch.float64) * 2.5
    hb = fit_histogram_binning(zv, yv, 15)
    pv, pt = torch.softmax(zv, 1), torch.softmax(zt, 1)
    want_values, want_test = numpy_histogram_binning(pv.amax(1).numpy(), (pv.argmax(1) == yv).numpy().astype(float),
                                                     pt.amax(1).numpy(), 15)
    assert isinstance(hb, HistogramBinning) and hb.counts.sum() == 3000
    assert np.allclose(hb.values, want_values, atol=1e-15)
    assert np.allclose(histogram_binning_confidence(zt, hb), want_test, atol=1e-15)
    # the calibrated logits carry the binned confidence (clipped to [1e-7, 1 - 1e-7]) and keep the prediction
    new = torch.as_tensor(apply_histogram_binning(zt, hb))
    q = torch.softmax(new, 1)
    assert torch.equal(q.argmax(1), pt.argmax(1))
    floor = (pt.scatter(1, pt.argmax(1, keepdim=True), 0).amax(1) / (1 - pt.amax(1)))
    keep = torch.as_tensor(want_test) > floor / (1 + floor) + 1e-6     # rows where the prediction-keeping floor is idle
    assert np.allclose(q.amax(1)[keep].numpy(), np.clip(want_test[keep.numpy()], 1e-7, 1 - 1e-7), atol=1e-12)


def test_bad_input():
    with pytest.raises(DataError, match="VectorScaling"):
        apply_vector_scaling(np.zeros((2, 3)), 1.5)
    with pytest.warns(RuntimeWarning, match="stopped after 5"):
        vs = fit_vector_scaling(np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 2.0, 0.0]]), [0, 2, 0], max_iter=5)
    with pytest.raises(DataError, match=r"\[N, 3\]"):
        apply_vector_scaling(np.zeros((2, 4)), vs)
    with pytest.raises(DataError, match="unknown post-hoc"):
        posthoc_calibration(np.zeros((2, 3)), [0, 1], np.zeros((2, 3)), [0, 1], methods=("platt",))


@pytest.mark.slow
def test_real_dumps_reduce_ece_and_cli(real_dumps, tmp_path, capsys):
    from _cli import run_cli

    # fit on the train Dump, measure on the held-out test Dump of the same model
    for name in ("CE", "LS", "MaxSup"):
        val, test = real_dumps[name]["train"], real_dumps[name]["test"]
        before = calibration_report(test.logits, test.labels, progress=False).ece
        vs = fit_vector_scaling(val.logits, val.labels)
        hb = fit_histogram_binning(val.logits, val.labels)
        after_vs = calibration_report(apply_vector_scaling(np.asarray(test.logits), vs), test.labels,
                                      progress=False).ece
        after_hb = calibration_report(apply_histogram_binning(np.asarray(test.logits), hb), test.labels,
                                      progress=False).ece
        assert after_hb < before, (name, before, after_hb)
        if name == "LS":                       # label smoothing leaves the model under-confident: clear gains
            assert after_vs < before, (name, before, after_vs)
    names = ["CE", "LS", "MaxSup"]
    results = posthoc_dumps([real_dumps[n]["train"] for n in names], [real_dumps[n]["test"] for n in names],
                            names=names)
    assert set(results[0].reports) == {"none", "temperature", "vector", "histogram"}
    assert set(results[0].to_frame()["method"]) == {"none", "temperature", "vector", "histogram"}
    with pytest.raises(DataError, match="same model"):
        posthoc_dumps([real_dumps["CE"]["train"]], [real_dumps["LS"]["test"]])
    out = tmp_path / "ph"
    args = ["posthoc", *(str(real_dumps[n]["test"].path) for n in names), "--names", ",".join(names), "--out",
            str(out), "--json"]
    for n in names:
        args += ["--val", str(real_dumps[n]["train"].path)]
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    shown = json.loads(stdout)
    assert json.loads((out / "posthoc.json").read_text())["models"][0]["metrics"] == shown["models"][0]["metrics"]
    for r, m in zip(results, shown["models"]):
        assert m["name"] == r.name
        for method, rep in r.reports.items():
            assert m["metrics"][method]["ece"] == pytest.approx(rep.ece, abs=1e-12)
            assert m["metrics"][method]["nll"] == pytest.approx(rep.nll, abs=1e-12)
    code, stdout, _ = run_cli(args[:-1 - 2 * 3] + args[-2 * 3:], capsys)    # without --json: the table
    assert code == 0 and "histogram" in stdout and "ECE %" in stdout


def _dump(sha, seed, n=300, k=4):
    from repanalysis.dump import Dump

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 3
    y = torch.where(torch.rand(n, generator=g) < 0.7, z.argmax(1), torch.randint(0, k, (n,), generator=g))
    meta = {"checkpoint": {"path": f"/ck/{sha}.pth", "sha256": sha * 8}}
    return Dump.from_arrays(z, y, features=torch.rand(n, 5, generator=g) + 0.1, name=sha, meta=meta)


def test_cli_small_dumps_and_usage_errors(tmp_path, capsys):
    from _cli import run_cli

    _dump("aa", 0).save(tmp_path / "val")
    _dump("aa", 1).save(tmp_path / "test")
    _dump("bb", 2).save(tmp_path / "other")
    out = tmp_path / "o"
    code, stdout, stderr = run_cli(["posthoc", str(tmp_path / "test"), "--val", str(tmp_path / "val"), "--out",
                                    str(out), "--methods", "vector,histogram", "--json"], capsys)
    assert code == 0, stderr
    got = json.loads(stdout)["models"][0]["metrics"]
    want = posthoc_calibration(_dump("aa", 0).logits, _dump("aa", 0).labels, _dump("aa", 1).logits,
                               _dump("aa", 1).labels, methods=("vector", "histogram"))
    assert set(got) == {"none", "vector", "histogram"}
    for method, rep in want.reports.items():
        assert got[method]["ece"] == pytest.approx(rep.ece, abs=1e-12)
    code, _, stderr = run_cli(["posthoc", str(tmp_path / "test"), "--val", str(tmp_path / "other"), "--out",
                               str(out)], capsys)
    assert code != 0 and "same model" in stderr
    code, _, stderr = run_cli(["posthoc", str(tmp_path / "test"), str(tmp_path / "other"), "--val",
                               str(tmp_path / "val"), "--out", str(out)], capsys)
    assert code != 0 and "--val was given 1 times for 2 inputs" in stderr
    code, _, stderr = run_cli(["posthoc", str(tmp_path / "test"), "--val", str(tmp_path / "val"), "--methods",
                               "platt", "--out", str(out)], capsys)
    assert code != 0 and "unknown" in stderr
    code, stdout, stderr = run_cli(["selective", str(tmp_path / "test"), str(tmp_path / "other"), "--out",
                                    str(tmp_path / "s"), "--json"], capsys)
    assert code == 0, stderr
    assert [m["name"] for m in json.loads(stdout)["models"]] == ["aa", "bb"]
