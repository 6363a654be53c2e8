"""Training dynamics over checkpoint series: ordering, per-epoch numbers, calibration states, forgetting, resuming,
and the `repanalysis dynamics` command on real per-epoch checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import repanalysis as ra
from repanalysis.analyze.dynamics import (METRICS, calibration_states, dynamics_of_runs, flip_rate,
                                          forgetting_counts, forgetting_distribution, forgetting_events,
                                          learning_events, never_learned, state_proportions)
from repanalysis.errors import DataError
from repanalysis.extract.series import checkpoint_epoch, checkpoint_series, file_numbers, order_checkpoints

from _cli import run_cli

SD = {"w": torch.zeros(2)}


# --- ordering ------------------------------------------------------------------------------------------------
def test_orders_by_the_epoch_the_checkpoints_record(tmp_path):
    # the names say 1, 2, 3 but the recorded epochs say otherwise: the recorded epoch wins
    for epoch, name in [(30, "a_1"), (10, "a_2"), (20, "a_3")]:
        torch.save({"state_dict": SD, "epoch": epoch}, tmp_path / f"{name}.pth")
    torch.save({"model": SD, "epoch": torch.tensor(40)}, tmp_path / "a_4.pth")    # a one-element tensor too
    series = checkpoint_series(str(tmp_path / "a_*.pth"), name="A")
    assert series.ordered_by == "epoch key"
    assert [(e, p.name) for e, p in series.checkpoints] == [(10, "a_2.pth"), (20, "a_3.pth"), (30, "a_1.pth"),
                                                            (40, "a_4.pth")]
    assert checkpoint_epoch(tmp_path / "a_1.pth") == 30


def test_orders_by_the_number_in_the_file_names(tmp_path):
    for k in (10, 2, 1):
        torch.save(SD, tmp_path / f"epoch_{k}.pth")                 # flat state_dicts: no epoch recorded
    series = checkpoint_series(tmp_path)                            # a folder works as a glob of its checkpoints
    assert series.ordered_by == "file name" and series.epochs == [1, 2, 10]
    assert series.name == tmp_path.name
    # several numbers in the names: the one that differs between them
    names = [tmp_path / f"ce_e8_n4000_s0_{k}.pth" for k in (3, 1, 2)]
    assert list(file_numbers(names).values()) == [3, 1, 2]
    # a series where some files record an epoch and others not falls back to the names
    torch.save({"state_dict": SD, "epoch": 7}, tmp_path / "epoch_2.pth")
    ordered, how = order_checkpoints(sorted(tmp_path.glob("epoch_*.pth")))
    assert how == "file name" and [e for e, _ in ordered] == [1, 2, 10]


def test_refuses_when_neither_epochs_nor_names_order_the_checkpoints(tmp_path):
    torch.save(SD, tmp_path / "x_1.pth")
    torch.save(SD, tmp_path / "y_1.pth")
    with pytest.raises(DataError, match=r"x_1\.pth and y_1\.pth share number 1"):
        checkpoint_series(str(tmp_path / "*.pth"))
    torch.save(SD, tmp_path / "best.pth")
    with pytest.raises(DataError, match=r"best\.pth has no number"):
        checkpoint_series(tmp_path)
    with pytest.raises(DataError, match="matches no file"):
        checkpoint_series(str(tmp_path / "nothing_*.pth"))
    # two checkpoints recording the same epoch, and names without a usable number
    torch.save({"state_dict": SD, "epoch": 3}, tmp_path / "ep1_acc90.pth")
    torch.save({"state_dict": SD, "epoch": 3}, tmp_path / "ep2_acc93.pth")
    with pytest.raises(DataError, match=r"ep1_acc90\.pth and ep2_acc93\.pth share recorded epoch 3.*more than one"):
        checkpoint_series(str(tmp_path / "ep*.pth"))


# --- per-sample quantities against brute force ----------------------------------------------------------------
def test_forgetting_and_flips_on_a_hand_worked_case():
    # epochs x samples; sample 0 learned then forgotten twice, 1 always right, 2 never right, 3 forgotten once
    correct = np.array([[1, 1, 0, 0],
                        [0, 1, 0, 1],
                        [1, 1, 0, 0],
                        [0, 1, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(forgetting_events(correct), [np.nan, 1, 1, 1])
    np.testing.assert_array_equal(learning_events(correct), [np.nan, 1, 1, 1])
    np.testing.assert_array_equal(forgetting_counts(correct), [2, 0, 0, 1])
    np.testing.assert_array_equal(never_learned(correct), [False, False, True, False])
    assert forgetting_distribution(correct) == {"never_learned": 1, "learned": 3, "counts": {0: 1, 1: 1, 2: 1}}
    preds = np.array([[0, 1, 2, 3], [1, 1, 2, 3], [1, -1, 2, 0], [1, 1, 2, 0]])     # -1: no prediction
    # epoch 1: 1 of 4 changed; epoch 2: 1 of 3 defined at both; epoch 3: 0 of 3
    np.testing.assert_allclose(flip_rate(preds, missing=-1), [np.nan, 1 / 4, 1 / 3, 0.0])


def test_forgetting_and_flip_rates_equal_a_numpy_brute_force():
    rng = np.random.default_rng(0)
    correct = rng.random((7, 50)) < 0.6
    states = rng.integers(-1, 2, (7, 50)).astype(np.int8)
    events, counts, flips = [np.nan], np.zeros(50, dtype=int), [np.nan]
    for t in range(1, 7):
        n_forgot = 0
        changed, defined = 0, 0
        for i in range(50):
            if correct[t - 1, i] and not correct[t, i]:
                n_forgot += 1
                counts[i] += 1
            if states[t, i] != -1 and states[t - 1, i] != -1:
                defined += 1
                changed += states[t, i] != states[t - 1, i]
        events.append(n_forgot)
        flips.append(changed / defined)
    np.testing.assert_array_equal(forgetting_events(correct), events)
    np.testing.assert_array_equal(forgetting_counts(correct), counts)
    np.testing.assert_allclose(flip_rate(states), flips)
    over, under = state_proportions(states)
    for t in range(7):
        d = states[t][states[t] != -1]
        assert over[t] == pytest.approx((d == 1).mean()) and under[t] == pytest.approx((d == 0).mean())


def test_calibration_states_equal_a_brute_force_binning():
    rng = np.random.default_rng(1)
    conf = np.concatenate([rng.uniform(0.1, 1.0, 500), [1.0, 2 / 15, 0.2]])      # values on bin edges included
    correct = rng.random(conf.size) < conf ** 0.5
    states = calibration_states(conf, correct, n_bins=15)
    expected = np.empty(conf.size, dtype=np.int8)
    for i, c in enumerate(conf):
        b = next(j for j in range(15) if j / 15 < c <= (j + 1) / 15)            # (lo, hi] bins
        members = [k for k, v in enumerate(conf) if b / 15 < v <= (b + 1) / 15]
        expected[i] = int(conf[members].mean() > correct[members].mean())
    np.testing.assert_array_equal(states, expected)


# --- the per-epoch numbers are the existing analyses' ---------------------------------------------------------
def _toy_dump(rng, y, scale, d=6, k=4):
    z = rng.normal(size=(len(y), k)).astype(np.float32)
    z[np.arange(len(y)), y] += scale
    h = (rng.normal(size=(len(y), d)) + y[:, None]).astype(np.float32)
    return ra.Dump.from_arrays(z, y, h, name="toy")


def test_per_epoch_values_equal_the_existing_analyses_called_directly():
    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.analyze.confidence import feature_l1_norm
    from repanalysis.analyze.geometry import class_separation
    from repanalysis.analyze.logits import logit_gap, logit_stats

    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 200)
    y_train = rng.integers(0, 4, 120)
    val = [(e, _toy_dump(rng, y, s)) for e, s in ((2, 1.0), (1, 0.3), (3, 2.5))]        # any order: sorted
    train = [(e, _toy_dump(rng, y_train, s)) for e, s in ((1, 0.3), (2, 1.0), (3, 2.5))]
    res = dynamics_of_runs({"A": val}, {"A": train})
    run = res.run("A")
    assert list(run.epochs) == [1, 2, 3] and set(run.metrics) == set(METRICS)
    assert run.separation_data == "train"
    for t, (epoch, dump) in enumerate(sorted(val, key=lambda v: v[0])):
        cal = calibration_report(dump.logits, dump.labels, 15, progress=False)
        stats = logit_stats(dump.logits, dump.labels, threshold=0.01)
        sep = class_separation(dict(train)[epoch])
        z = dump.logits.astype(np.float64)
        expected = {"accuracy": cal.accuracy, "nll": cal.nll, "ece": cal.ece, "oece": cal.oece, "uece": cal.uece,
                    "near_zero_fraction": stats.mean("near_zero_fraction"),
                    "logit_gap": (z.max(1, keepdims=True) - z).mean(),       # FedLaS Eq. 5, by hand
                    "feature_l1_norm": float(feature_l1_norm(dump.features).mean()),
                    "d_within": sep.d_within, "d_total": sep.d_total, "r2": sep.r2}
        for metric, value in expected.items():
            assert run.metrics[metric][t] == pytest.approx(value, rel=1e-12, abs=1e-12), (epoch, metric)
        assert logit_gap(dump.logits).mean() == pytest.approx(expected["logit_gap"], rel=1e-12)
        np.testing.assert_array_equal(run.correct[t], z.argmax(1) == y)
        np.testing.assert_array_equal(run.predictions[t], z.argmax(1))
        np.testing.assert_array_equal(run.states[t], calibration_states(cal.confidence, cal.correct))
    np.testing.assert_array_equal(run.metrics["forgetting_events"], forgetting_events(run.correct))
    np.testing.assert_array_equal(run.metrics["state_flip_rate"], flip_rate(run.states))
    # without train Dumps, the geometry is that of the evaluation Dumps
    alone = dynamics_of_runs({"A": val}).run("A")
    assert alone.separation_data == "evaluation"
    assert alone.metrics["r2"][0] == pytest.approx(class_separation(dict(val)[1]).r2, rel=1e-12)
    # the tidy frame and the JSON
    frame = res.to_frame()
    assert list(frame.columns) == ["model", "epoch", "metric", "value", "n"]
    assert len(frame) == 3 * len(METRICS)
    ece = frame[(frame.metric == "ece") & (frame.epoch == 2)].value.item()
    assert ece == run.metrics["ece"][1]
    payload = json.loads(json.dumps(res.to_dict()))
    assert payload["runs"][0]["metrics"]["forgetting_events"][0] is None           # NaN -> null
    assert "gating network" in payload["calibration_state"]


def test_a_diverged_epoch_counts_as_wrong_and_has_no_state(recwarn):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 60)
    a, b = _toy_dump(rng, y, 3.0), _toy_dump(rng, y, 3.0)
    z = np.array(b.logits)
    z[5] = np.nan
    b = ra.Dump.from_arrays(z, y, b.features)
    run = dynamics_of_runs({"A": [(1, a), (2, b)]}).run("A")
    assert not run.correct[1, 5] and run.predictions[1, 5] == -1 and run.states[1, 5] == -1
    assert run.correct[0, 5]                        # so sample 5 is forgotten at epoch 2
    assert run.metrics["forgetting_events"][1] == forgetting_events(run.correct)[1] >= 1


def test_a_run_of_other_samples_or_repeated_epochs_is_refused():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 30)
    with pytest.raises(DataError, match="epoch 1 is given twice"):
        dynamics_of_runs({"A": [(1, _toy_dump(rng, y, 1)), (1, _toy_dump(rng, y, 1))]})
    with pytest.raises(DataError, match="holds 30 samples"):
        dynamics_of_runs({"A": [(1, _toy_dump(rng, y, 1)), (2, _toy_dump(rng, y[:20], 1))]})


# --- real per-epoch checkpoints: training, resuming, the command ---------------------------------------------
@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Two real runs (CE, LS), a checkpoint per epoch: 3 epochs on 300 real MNIST digits, and 200 test digits."""
    from repanalysis.train import make_demo_checkpoints
    from repanalysis.train.trainer import DIGIT_NAMES, epoch_folder, write_npz

    folder = tmp_path_factory.mktemp("series")
    finals, data = make_demo_checkpoints(folder, ("ce", "ls"), epochs=3, n_train=300, save_every_epoch=True,
                                         progress=False)
    with np.load(data["test"]) as npz:
        val = write_npz(folder / "val.npz", npz["images"][:200], npz["labels"][:200], DIGIT_NAMES)
    return folder, finals, {name: epoch_folder(path) for name, path in finals.items()}, val, data


@pytest.mark.slow
def test_per_epoch_checkpoints_are_saved_alongside_the_final_one(series):
    from repanalysis.train import make_demo_checkpoints

    folder, finals, runs, _, _ = series
    files = sorted(runs["CE"].glob("*.pth"))
    assert [f.name for f in files] == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth"]
    saved = torch.load(runs["CE"] / "epoch_3.pth", weights_only=True)
    assert saved["epoch"] == 3 and saved["repanalysis"]["loss"] == "ce"
    final = torch.load(finals["CE"], weights_only=True)
    assert "epoch" not in final                                     # the final checkpoint is as before
    for key, value in final["state_dict"].items():                  # the last epoch is the final model
        assert torch.equal(value, saved["state_dict"][key])
    assert ra.load_model(runs["LS"] / "epoch_1.pth").num_classes == 10
    stamps = {p: p.stat().st_mtime_ns for p in [*files, finals["CE"]]}
    make_demo_checkpoints(folder, ("ce",), epochs=3, n_train=300, save_every_epoch=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps     # cached: nothing trained or written again


@pytest.mark.slow
def test_a_killed_run_resumes_and_a_second_run_extracts_nothing(series, tmp_path):
    from repanalysis.compare.dynamics import run_dynamics
    from repanalysis.extract.series import checkpoint_series, series_dump_path

    _, _, runs, val, _ = series
    out = tmp_path / "dyn"
    # killed after the first checkpoint's Dump was half written
    first = checkpoint_series(runs["CE"], name="CE").checkpoints[0][1]
    partial = ra.extract(first, val, series_dump_path(out / "dumps", "CE", first, "val"), max_batches=1,
                         batch_size=64, progress=False, workers=0, device="cpu")
    assert not partial.complete
    res = run_dynamics([runs["CE"]], names=["CE"], data=val, out=out, device="cpu", workers=0, progress=False,
                       figures=False)
    assert len(res.extracted) == 3                                  # the partial one resumed, two extracted
    again = run_dynamics([runs["CE"]], names=["CE"], data=val, out=out, device="cpu", workers=0, progress=False,
                         figures=False)
    assert again.extracted == []
    np.testing.assert_array_equal(again.result.run("CE").metrics["ece"], res.result.run("CE").metrics["ece"])
    dump = ra.load_dump(series_dump_path(out / "dumps", "CE", first, "val"))
    from repanalysis.analyze.calibration import calibration_report

    assert res.result.run("CE").metrics["ece"][0] == calibration_report(dump.logits, dump.labels,
                                                                         progress=False).ece


@pytest.mark.slow
def test_the_command_on_real_per_epoch_checkpoints(series, tmp_path, capsys):
    _, _, runs, val, data = series
    out = tmp_path / "out"
    argv = ["dynamics", "--checkpoint", str(runs["CE"] / "epoch_*.pth"), "--checkpoint", str(runs["LS"]),
            "--names", "CE,LS", "--data", str(val), "--train-data", str(data["train"]), "--out", str(out),
            "--device", "cpu", "--workers", "0", "--quiet"]
    code, stdout, stderr = run_cli(argv, capsys)
    assert code == 0, stderr
    assert "CE (200 samples; d_within / R^2 on the train data)" in stdout and "never learned" in stdout
    assert "12 Dumps extracted, 0 reused" in stderr
    payload = json.loads((out / "dynamics.json").read_text())
    assert [r["name"] for r in payload["runs"]] == ["CE", "LS"]
    assert payload["runs"][0]["epochs"] == [1, 2, 3]
    assert payload["series"][0]["ordered_by"] == "epoch key"
    assert len(payload["provenance"]["inputs"]) == 12
    for name in ("dynamics.csv", "dynamics.png", "dynamics.pdf", "forgetting.png", "forgetting.pdf"):
        assert (out / name).stat().st_size > 0
    code, _, stderr = run_cli(argv, capsys)
    assert code == 0 and "0 Dumps extracted, 12 reused" in stderr
    # one line naming the files when a run cannot be ordered
    (tmp_path / "bad").mkdir()
    torch.save(SD, tmp_path / "bad" / "a.pth")
    torch.save(SD, tmp_path / "bad" / "b.pth")
    code, _, stderr = run_cli(["dynamics", "--checkpoint", str(tmp_path / "bad"), "--data", str(val), "--out",
                               str(tmp_path / "o2")], capsys)
    assert code != 0 and "a.pth, b.pth have no number" in stderr and stderr.count("\n") == 1
