"""`repanalysis compare`: the numbers in its tables against the analyses run directly, the paired intervals against a
brute-force paired bootstrap, provenance in every JSON, reuse of Dumps, the report in headless Chromium, bad input."""
from __future__ import annotations

import csv
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from _cli import run_cli
from test_paired import resample_indices

NAMES = ["CE", "LS", "MaxSup"]
N_BOOT = 120


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def compared(real_dumps, tmp_path_factory):
    """compare on the real Dumps (test = evaluation data, train), no Grad-CAM (no boxes), no UMAP."""
    from repanalysis.compare import compare

    out = tmp_path_factory.mktemp("compare") / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = compare(dumps=[real_dumps[n]["test"].path for n in NAMES], names=",".join(NAMES),
                      train_dumps=[real_dumps[n]["train"].path for n in NAMES], out=out, n_boot=N_BOOT, seed=3,
                      device="cpu", embed=False, progress=False)
    return res


def _json(path):
    return json.loads(Path(path).read_text())


def test_tables_hold_the_numbers_of_the_analyses_run_directly(compared, real_dumps):
    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.analyze.geometry import class_separation
    from repanalysis.analyze.logits import logit_stats

    out = compared.out
    cal = {r["model"]: r for r in _json(out / "tables" / "table1_calibration.json")["rows"]}
    sep = {r["model"]: r for r in _json(out / "tables" / "table2_separation.json")["rows"]}
    logit = {r["model"]: r for r in _json(out / "tables" / "logits.json")["rows"]}
    assert list(cal) == list(sep) == list(logit) == NAMES
    for name in NAMES:
        test, train = real_dumps[name]["test"], real_dumps[name]["train"]
        ref = calibration_report(np.asarray(test.logits), np.asarray(test.labels))
        for key in ("accuracy", "ece", "aece", "oece", "uece", "nll"):
            assert cal[name][key] == pytest.approx(getattr(ref, key), abs=1e-9), (name, key)
        for split, dump in (("train", train), ("val", test)):
            s = class_separation(np.asarray(dump.features), np.asarray(dump.labels))
            assert sep[name][f"d_within {split}"] == pytest.approx(s.d_within, abs=1e-9)
            assert sep[name][f"R^2 {split}"] == pytest.approx(s.r2, abs=1e-9)
        row = logit_stats(np.asarray(test.logits), np.asarray(test.labels)).row()
        assert logit[name]["near_zero"] == pytest.approx(row["near_zero"]) and logit[name]["accuracy"] == row["accuracy"]
    # Markdown and CSV hold the same table: one row per model, the FedLaS headers
    md = (out / "tables" / "table1_calibration.md").read_text()
    assert "| model | N | Acc % | ECE % | AECE % | O-ECE % | U-ECE % | NLL |" in md
    assert all(f"| {n} |" in md for n in NAMES)
    with open(out / "tables" / "table1_calibration.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == NAMES
    assert float(rows[1]["ece"]) == pytest.approx(cal["LS"]["ece"])


def test_paired_intervals_equal_a_brute_force_paired_bootstrap(compared, real_dumps):
    from repanalysis.analyze.calibration import expected_calibration_error
    from repanalysis.analyze.geometry import class_separation

    rows = {(r["analysis"], r["split"], r["metric"], r["model"]): r
            for r in _json(compared.out / "tables" / "paired_differences.json")["differences"]}
    assert {k[3] for k in rows} == {"LS", "MaxSup"}                  # every model but the baseline
    z = {n: np.asarray(real_dumps[n]["test"].logits, np.float64) for n in NAMES}
    y = np.asarray(real_dumps["CE"]["test"].labels)
    idx = resample_indices(len(y), N_BOOT, 3)
    for model in ("LS", "MaxSup"):
        acc = np.array([np.mean(z[model][i].argmax(1) == y[i]) - np.mean(z["CE"][i].argmax(1) == y[i]) for i in idx])
        r = rows["logits", "val", "accuracy", model]
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(np.percentile(acc, [2.5, 97.5])), abs=1e-12)
        assert r["difference"] == pytest.approx(r["value"] - r["baseline_value"])
        assert r["excludes_zero"] == bool(r["ci_low"] > 1e-9 or r["ci_high"] < -1e-9)
        ece = np.array([expected_calibration_error(z[model][i], y[i]) - expected_calibration_error(z["CE"][i], y[i])
                        for i in idx])
        r = rows["calibration", "val", "ece", model]
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(np.percentile(ece, [2.5, 97.5])), abs=1e-6)
    f = {n: np.asarray(real_dumps[n]["train"].features) for n in ("CE", "LS")}
    yt = np.asarray(real_dumps["CE"]["train"].labels)
    idx = resample_indices(len(yt), N_BOOT, 3)[:30]                    # the first 30 replicates, brute force
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r2 = np.array([class_separation(f["LS"][i], yt[i]).r2 - class_separation(f["CE"][i], yt[i]).r2 for i in idx])
    from repanalysis.analyze.paired import separation_replicates

    reps = {n: separation_replicates(f[n], yt, N_BOOT, 3)["r2"][:30] for n in ("CE", "LS")}
    np.testing.assert_allclose(reps["LS"] - reps["CE"], r2, atol=1e-6)


def test_every_json_carries_the_provenance(compared, real_checkpoints):
    files = [p for p in compared.out.rglob("*.json") if "dumps" not in p.parts]
    assert len(files) >= 10
    shas = {n: _sha(real_checkpoints[n]) for n in NAMES}
    for path in files:
        prov = _json(path)["provenance"]
        assert prov["tool"] == "repanalysis" and prov["version"]
        inputs = prov["inputs"]
        assert [i["name"] for i in inputs] == NAMES * 2, path          # the evaluation Dumps, then the train ones
        assert [i["checkpoint"]["sha256"] for i in inputs[:3]] == [shas[n] for n in NAMES], path
        assert inputs[0]["data"]["root"].endswith(".npz") and inputs[0]["transform"]["mean"]
    manifest = _json(compared.out / "compare.json")
    assert manifest["analyses"]["gradcam"].startswith("skipped: no object boxes")
    assert sorted(manifest["files"]) == sorted(str(p.relative_to(compared.out)) for p in compared.files)
    assert all((compared.out / f).is_file() for f in manifest["files"])


def test_to_frame_is_one_frame_of_every_analysis(compared):
    frame = compared.to_frame()
    assert {"calibration", "logits", "geometry"} <= set(frame["analysis"])
    cal = {r["model"]: r for r in _json(compared.out / "tables" / "table1_calibration.json")["rows"]}
    ece = frame[(frame.analysis == "calibration") & (frame.metric == "ece")]
    assert dict(zip(ece.model, ece.value)) == pytest.approx({n: cal[n]["ece"] for n in NAMES})
    paired = compared.paired.to_frame()
    assert set(paired.model) == {"LS", "MaxSup"} and len(paired) == len(compared.paired.rows)


def test_report_opens_in_headless_chromium(compared):
    from PIL import Image

    from _browser import inspect_page

    page = inspect_page(compared.report, screenshot=compared.out / "report_screenshot.png")
    pngs = [f.path for p in compared.parts for f in p.figures]
    assert len(page["images"]) == len(pngs) >= 8
    for img, png in zip(page["images"], pngs):
        assert img["complete"] and img["naturalWidth"] == Image.open(png).size[0] > 0
    assert page["console_errors"] == []
    tables = [t for t in page["tables"] if not t["caption"].startswith("The inputs of this report")]
    assert tables and all(t["rows"] == len(NAMES) for t in tables), [(t["caption"][:30], t["rows"]) for t in tables]
    for name in NAMES:
        assert name in page["text"]
    assert "Skipped: no object boxes were given" in page["text"]
    assert page["text"].index("Paired differences against CE") < page["text"].index("Calibration, FedLaS Table 1")


@pytest.mark.slow
def test_checkpoints_with_boxes_extract_once_and_score_gradcam(real_checkpoints, real_data, tmp_path):
    from repanalysis.analyze.cam import localise_checkpoints
    from repanalysis.analyze.paired import localisation_replicates
    from repanalysis.compare import compare
    from repanalysis.demo.steps.report import digit_box_file

    boxes = digit_box_file(real_data["test"], tmp_path, n=24)
    ckpts = [real_checkpoints[n] for n in NAMES]
    kwargs = dict(names=NAMES, data=real_data["test"], boxes=boxes, cam_limit=24, out=tmp_path / "out", n_boot=50,
                  device="cpu", embed=False, progress=False, baseline="LS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = compare(ckpts, **kwargs)
        again = compare(ckpts, **kwargs)
    assert len(first.extracted) == 3 and again.extracted == []          # complete Dumps of the same run: reused
    direct, _ = localise_checkpoints(ckpts, real_data["test"], boxes, names=NAMES, device="cpu", progress=False,
                                     limit=24)
    table = {r["model"]: r for r in _json(tmp_path / "out" / "tables" / "gradcam.json")["rows"]}
    for res in direct:
        assert table[res.name]["images"] == 24
        assert table[res.name]["iou"] == pytest.approx(float(np.nanmean(res.iou)), abs=1e-6)
    rows = {(r["metric"], r["model"]): r for r in again.paired.table_rows() if r["analysis"] == "gradcam"}
    by = {r.name: r for r in direct}
    reps = {n: localisation_replicates(by[n], 50, 0)["iou"] for n in NAMES}
    for model in ("CE", "MaxSup"):                                       # baseline LS
        lo, hi = np.percentile(reps[model] - reps["LS"], [2.5, 97.5])
        assert (rows["iou", model]["ci_low"], rows["iou", model]["ci_high"]) == pytest.approx((lo, hi), abs=1e-6)
    assert not again.part("gradcam").skipped and len(again.part("gradcam").figures) == 2


def test_an_older_report_is_replaced_as_one_set(real_dumps, tmp_path, monkeypatch):
    import repanalysis.compare.run as run
    from repanalysis.compare import compare
    from repanalysis.errors import DataError

    out = tmp_path / "out"
    args = dict(dumps=[real_dumps[n]["test"].path for n in NAMES], names=NAMES, out=out, n_boot=0, device="cpu",
                embed=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        compare(**args)
        # an older run's file that this run does not make (its manifest lists it): removed with the new set
        stale = out / "figures" / "gradcam" / "grid.png"
        stale.parent.mkdir(parents=True)
        stale.write_bytes(b"old")
        manifest = _json(out / "compare.json")
        manifest["files"].append("figures/gradcam/grid.png")
        (out / "compare.json").write_text(json.dumps(manifest))
        compare(**args)
        assert not stale.exists() and (out / "report.html").is_file()
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "dumps" not in p.parts}

        def broken(job):
            raise DataError("the disk is full")
        monkeypatch.setattr(run, "PARTS", (*run.PARTS[:2], broken))
        with pytest.raises(DataError, match="disk is full"):
            compare(**args)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "dumps" not in p.parts}
    assert after == before                                             # nothing replaced, no temporary file left


def _saved_copy(dump, folder, **changes):
    from repanalysis.dump import Dump

    kw = dict(class_names=dump.class_names, name=dump.name)
    kw.update(changes)
    logits, labels = kw.pop("logits", np.asarray(dump.logits)), kw.pop("labels", np.asarray(dump.labels))
    return Dump.from_arrays(logits, labels, np.asarray(dump.features), **kw).save(folder).path


def test_bad_inputs_are_one_line(real_dumps, tmp_path, capsys):
    ce, ls = real_dumps["CE"]["test"], real_dumps["LS"]["test"]
    base = ["compare", "--out", str(tmp_path / "o"), "--bootstrap", "0", "--no-embed", "--device", "cpu", "--quiet"]
    renamed = list(ce.class_names)
    renamed[2], renamed[3] = renamed[3], renamed[2]
    cases = [
        (["--dump", str(ce.path), "--dump", str(ls.path), "--names", "A,B,C"], "--names gives 3 names for 2 Dumps"),
        (["--dump", str(ce.path), "--dump", str(ls.path), "--baseline", "ls"],
         "baseline 'ls' is not one of the models"),
        (["--dump", str(ce.path), "--dump", str(_saved_copy(ls, tmp_path / "order", class_names=renamed))],
         "the class order differs: class 2 is 'two'"),
        (["--dump", str(ce.path), "--dump", str(_saved_copy(ls, tmp_path / "labels",
                                                            labels=np.roll(np.asarray(ls.labels), 1)))],
         "expected the same images in the same order, labelled alike"),
        (["--dump", str(ce.path)], "compare needs at least two models"),
        (["--dump", str(ce.path), "--checkpoint", "x.pth"], "not both"),
        ([], "none was given"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(base + argv, capsys)
        assert code != 0 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o" / "report.html").exists()
