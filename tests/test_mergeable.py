"""Mergeable analyses over shards (repanalysis.analyze.mergeable, `repanalysis shard-stats`): the statistics of
three uneven shards, combined, equal the analyses of the whole Dump; save/load round trip; gaps, overlaps and
other runs refused."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from repanalysis.analyze.calibration import calibration_report
from repanalysis.analyze.geometry import SeparationAccumulator, class_separation
from repanalysis.analyze.logits import PER_SAMPLE_STATS, logit_stats
from repanalysis.analyze.mergeable import (load_statistics, merge_statistics, shard_statistics)
from repanalysis.dump import Dump, load_dump
from repanalysis.errors import DataError, DumpError

N, K, D = 1000, 7, 24
CUTS = [(0, 137), (137, 600), (600, N)]
RUN_META = {"split": "val", "dataset": {"root": "/data/val"}, "arch": "resnet18",
            "checkpoint": {"path": "/ck.pth", "sha256": "abc"}}


def _arrays():
    rng = np.random.default_rng(19)
    y = rng.integers(0, K, N)
    z = (rng.normal(size=(N, K)) * 1.5 + 2.5 * np.eye(K)[y]).astype(np.float32)
    z[rng.random(N) < 0.05] *= 0.002                     # some rows of near-zero logits (threshold 0.01)
    h = (rng.normal(size=(N, D)) + 2.0 * np.eye(K, D)[y]).astype(np.float32)
    z[[3, 4, 5]] = np.nan                                  # a whole chunk of shard 0 at chunk_size 3
    z[400, 2] = np.inf
    z[700, y[700]] = -np.inf                               # -inf at the label: excluded everywhere
    other = (y[800] + 1) % K
    z[800, other] = -np.inf                                # -inf elsewhere: calibration keeps, logit stats drop
    z[900, :] = 1.25                                       # all logits tied: prediction is class 0
    h[[10, 650]] = np.nan
    h[42] = 0.0                                            # zero norm: no cosine
    return z, y, h


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    z, y, h = _arrays()
    names = [f"class{k}" for k in range(K)]
    whole = Dump.from_arrays(z, y, h, class_names=names, name="r50", meta={**RUN_META, "fingerprint": "run1"})
    whole_path = root / "whole"
    whole.save(whole_path)
    paths = []
    for i, (a, b) in enumerate(CUTS):
        meta = {**RUN_META, "fingerprint": "run1",
                "shard": {"index": i, "count": 3, "start": a, "stop": b, "total": N, "run": "run1"}}
        p = root / f"shard{i}"
        Dump.from_arrays(z[a:b], y[a:b], h[a:b], class_names=names, name="r50", meta=meta).save(p)
        paths.append(p)
    return {"z": z, "y": y, "h": h, "whole": load_dump(whole_path), "whole_path": whole_path, "paths": paths,
            "root": root}


def _stats(paths, chunk_sizes=(3, 200, 128), **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [shard_statistics(load_dump(p), chunk_size=c, **kw) for p, c in zip(paths, chunk_sizes)]


@pytest.fixture(scope="module")
def merged(data):
    stats = _stats(data["paths"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return merge_statistics(stats[::-1]).compute()      # any order


def test_separation_equals_whole(data, merged):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = class_separation(data["whole"])
    sep = merged.separation
    assert sep.n_excluded == 3 == ref.n_excluded
    assert sep.n_samples == ref.n_samples == N - 3
    for key in ("d_within", "d_total", "r2"):
        assert getattr(sep, key) == pytest.approx(getattr(ref, key), rel=1e-12)
    np.testing.assert_allclose(sep.per_class_d_within, ref.per_class_d_within, rtol=1e-12)
    np.testing.assert_array_equal(sep.counts, ref.counts)
    assert 0.05 < sep.r2 < 0.95                   # a real separation, not a degenerate one


def test_calibration_equals_whole(data, merged):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = calibration_report(data["z"], data["y"], n_bins=15)
    cal = merged.calibration
    assert cal.num_samples == ref.num_samples == N - 5          # 3 NaN rows, +inf row, -inf at the label
    assert cal.n_excluded == ref.n_excluded == 5
    for key in ("ece", "mce", "oece", "uece", "classwise_ece", "nll", "brier", "accuracy", "mean_confidence"):
        assert getattr(cal, key) == pytest.approx(getattr(ref, key), rel=1e-12, abs=1e-15), key
    assert cal.ece > 0.01
    np.testing.assert_array_equal(cal.bins.counts, ref.bins.counts)
    np.testing.assert_allclose(cal.bins.edges, ref.bins.edges, rtol=0)
    np.testing.assert_allclose(cal.bins.accuracy, ref.bins.accuracy, rtol=1e-12)
    np.testing.assert_allclose(cal.bins.confidence, ref.bins.confidence, rtol=1e-12)
    np.testing.assert_allclose(cal.classwise_per_class, ref.classwise_per_class, rtol=1e-12)


def test_logit_statistics_equal_whole(data, merged):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = logit_stats(data["z"], data["y"], threshold=0.01, alpha=0.1)
    lg = merged.logits
    assert lg.num_samples == ref.num_samples == N - 6 and lg.num_excluded == 6
    for stat in PER_SAMPLE_STATS:
        want = ref.summary(stat)
        got = lg.summary(stat)
        for key in ("mean", "std", "min", "max"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (stat, key)
    assert lg.mean("near_zero_fraction") > 0
    assert lg.accuracy == pytest.approx(ref.accuracy, rel=1e-12)
    assert lg.ee_active_fraction == pytest.approx(ref.ee_active_fraction, rel=1e-12)
    assert lg.ee_mean_active == pytest.approx(ref.ee_mean_active, rel=1e-9)
    assert lg.ee_loss_share == pytest.approx(ref.ee_loss_share, rel=1e-9)
    assert lg.to_dict()["logit_penalty"]["mean"] == pytest.approx(ref.to_dict()["logit_penalty"]["mean"], rel=1e-9)


def test_confusion_equals_brute_force(data, merged):
    z, y = data["z"], data["y"]
    keep = np.isfinite(z).all(axis=1)
    want = np.zeros((K, K), dtype=np.int64)
    np.add.at(want, (y[keep], z[keep].argmax(axis=1)), 1)
    conf = merged.confusion
    np.testing.assert_array_equal(conf.counts, want)
    assert conf.counts[:, 0].sum() >= 1 and conf.num_samples == N - 6
    assert conf.accuracy == pytest.approx(np.trace(want) / want.sum(), rel=1e-15)
    np.testing.assert_allclose(conf.per_class_accuracy, np.diag(want) / want.sum(1), rtol=1e-15)
    top = conf.top_confusions(2)
    off = want - np.diag(np.diag(want))
    assert top[0][0].predicted == int(np.argmax(off[0])) and top[0][0].count == off[0].max()
    assert top[0][0].predicted_name == f"class{top[0][0].predicted}"


def test_merge_accumulators_equals_one():
    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(300, 5)), rng.integers(0, 4, 300)
    whole = SeparationAccumulator()
    whole.update(h, y)
    a, b = SeparationAccumulator(), SeparationAccumulator()
    a.update(h[:100], y[:100])
    b.update(h[100:], np.where(y[100:] == 3, 9, y[100:]))       # a label value only b has
    whole9 = SeparationAccumulator()
    whole9.update(h, np.concatenate([y[:100], np.where(y[100:] == 3, 9, y[100:])]))
    merged = SeparationAccumulator.from_state(a.state()).merge(SeparationAccumulator.from_state(b.state()))
    r, ref = merged.compute(), whole9.compute()
    np.testing.assert_array_equal(r.classes, ref.classes)
    assert r.d_within == pytest.approx(ref.d_within, rel=1e-12) and r.r2 == pytest.approx(ref.r2, rel=1e-12)
    assert r.d_within != pytest.approx(whole.compute().d_within, rel=1e-9)   # label 9 is a class of its own


def test_save_load_round_trip(data, tmp_path):
    st = _stats(data["paths"][:1])[0]
    path = st.save(tmp_path / "s0.npz")
    with np.load(path, allow_pickle=False) as npz:             # plain arrays, no pickle
        assert "identity" in npz.files and npz["confusion"].dtype == np.int64
    back = load_statistics(path)
    assert back.shard == st.shard and back.meta == st.meta and back.class_names == st.class_names
    assert (back.n_bins, back.threshold, back.alpha) == (st.n_bins, st.threshold, st.alpha)
    np.testing.assert_array_equal(back.confusion, st.confusion)
    for key in ("bin_counts", "bin_conf", "cw_psum", "cw_hits"):
        np.testing.assert_array_equal(getattr(back.calibration, key), getattr(st.calibration, key))
    np.testing.assert_array_equal(back.logits.m2, st.logits.m2)
    s1, s2 = back.separation.state(), st.separation.state()
    np.testing.assert_array_equal(s1["sums"], s2["sums"])
    assert (s1["n_excluded"], s1["n_nonfinite"]) == (s2["n_excluded"], s2["n_nonfinite"]) == (2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert back.compute().to_dict() == st.compute().to_dict()


def test_load_refuses_other_files(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(DumpError, match="not a shard statistics file"):
        load_statistics(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DumpError, match="not a shard statistics file"):
        load_statistics(text)
    with pytest.raises(DumpError, match="not a file"):
        load_statistics(tmp_path / "missing.npz")


def test_missing_and_overlapping_shards_refused(data):
    stats = _stats(data["paths"])
    with pytest.raises(DumpError, match=r"rows 137-599 (are )?in no shard"):
        merge_statistics([stats[0], stats[2]])
    z, y, h = data["z"], data["y"], data["h"]
    meta = {**RUN_META, "fingerprint": "run1",
            "shard": {"index": 1, "count": 3, "start": 500, "stop": 700, "total": N, "run": "run1"}}
    extra = Dump.from_arrays(z[500:700], y[500:700], h[500:700], name="r50", meta=meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        extra_st = shard_statistics(extra)
    with pytest.raises(DumpError, match=r"rows 500-599 are in both .* and "):
        merge_statistics([*stats, extra_st])


def test_other_run_and_settings_refused(data):
    stats = _stats(data["paths"])
    z, y, h = data["z"], data["y"], data["h"]
    a, b = CUTS[2]
    meta = {**RUN_META, "checkpoint": {"path": "/other.pth", "sha256": "def"}, "fingerprint": "run2",
            "shard": {"index": 2, "count": 3, "start": a, "stop": b, "total": N, "run": "run2"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        other = shard_statistics(Dump.from_arrays(z[a:b], y[a:b], h[a:b], name="r50", meta=meta))
    with pytest.raises(DumpError, match="not shards of one extraction: other checkpoint"):
        merge_statistics([stats[0], stats[1], other])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rebinned = shard_statistics(load_dump(data["paths"][2]), n_bins=10)
    with pytest.raises(DataError, match="differ in bins"):
        merge_statistics([stats[0], stats[1], rebinned])


def _numbers(payload):
    """The analyses' numbers of a shard_stats.json (names, sources and shard records left out)."""
    return {k: payload[k] for k in ("num_samples", "num_classes", "separation", "calibration", "logits",
                                    "confusion")}


def _assert_close(a, b, path="", rel=1e-10):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}", rel)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert a == pytest.approx(b, rel=rel, abs=1e-14), path
    else:
        assert a == b, path


def test_cli_shards_equal_whole_and_saved(data, tmp_path, capsys):
    from _cli import run_cli

    paths = [str(p) for p in data["paths"]]
    code, out, err = run_cli(["shard-stats", "--shards", *paths, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert "d_within" in out and "ece" in out and "near-zero" in out
    code, out_whole, err = run_cli(["shard-stats", "--shards", str(data["whole_path"]), "--out",
                                    str(tmp_path / "w")], capsys)
    assert code == 0, err
    sharded = json.loads((tmp_path / "a" / "shard_stats.json").read_text())
    whole = json.loads((tmp_path / "w" / "shard_stats.json").read_text())
    assert sharded["provenance"]["inputs"] and len(sharded["shards"]) == 3
    _assert_close(_numbers(sharded), _numbers(whole))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = calibration_report(data["z"], data["y"])
    assert sharded["calibration"]["ece"] == pytest.approx(ref.ece, rel=1e-12)
    assert f"{ref.ece:.4f}" in out and f"{ref.ece:.4f}" in out_whole

    saved = []
    for i, p in enumerate(paths):                        # the per-machine step, then combine the files
        f = tmp_path / f"s{i}.npz"
        code, _, err = run_cli(["shard-stats", "--shards", p, "--save", str(f)], capsys)
        assert code == 0 and f.exists() and str(f) in err
        saved.append(str(f))
    code, _, err = run_cli(["shard-stats", "--shards", saved[2], saved[0], saved[1], "--out", str(tmp_path / "b"),
                            "--json"], capsys)
    assert code == 0, err
    combined = json.loads((tmp_path / "b" / "shard_stats.json").read_text())
    _assert_close(_numbers(combined), _numbers(sharded), rel=1e-13)


def test_cli_bad_inputs_one_line(data, tmp_path, capsys):
    from _cli import run_cli

    paths = [str(p) for p in data["paths"]]
    code, out, err = run_cli(["shard-stats", "--shards", paths[0], paths[2], "--out", str(tmp_path)], capsys)
    assert code == 2 and "rows 137-599" in err and "in no shard" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    code, _, err = run_cli(["shard-stats", bad.as_posix(), "--out", str(tmp_path)], capsys)
    assert code == 2 and "not a shard statistics file" in err and "Traceback" not in err
    code, _, err = run_cli(["shard-stats", "--shards", *paths[:2], "--save", str(tmp_path / "x.npz")], capsys)
    assert code == 2 and "one input" in err
