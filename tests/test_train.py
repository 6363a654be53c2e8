"""The training module: the losses' logit identities, the LS / MaxSup alpha schedules, and determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repanalysis.train import make_loss, mnist_digits, train_small_cnn

from _bars import record_bars


def test_label_smoothing_is_ce_plus_alpha_times_zy_minus_mean():
    # MaxSup Theorem 3.3: L_LS = CE + alpha * (z_y - mean_k z_k)
    z = torch.randn(64, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (64,))
    expected = F.cross_entropy(z, y) + 0.1 * (z.gather(1, y[:, None])[:, 0] - z.mean(1)).mean()
    torch.testing.assert_close(make_loss("ls", alpha=0.1)(z, y), expected)


def test_maxsup_penalises_the_top1_logit_with_a_linear_schedule():
    z = torch.tensor([[1.0, 4.0, -1.0, 0.0]])
    y = torch.tensor([0])  # ground truth is not the top-1: MaxSup penalises z_max = 4, not z_y
    loss = make_loss("maxsup")
    ce = F.cross_entropy(z, y)
    torch.testing.assert_close(loss(z, y, progress=0.0), ce + 0.1 * (4.0 - 1.0))
    torch.testing.assert_close(loss(z, y, progress=1.0), ce + 0.2 * (4.0 - 1.0))
    torch.testing.assert_close(loss(z, y, progress=0.5), ce + 0.15 * (4.0 - 1.0))
    lp = make_loss("logit_penalty")
    torch.testing.assert_close(lp(z, y), ce + 2e-3 * (1 + 16 + 1 + 0) / 2)


@pytest.mark.slow
def test_training_is_deterministic_under_a_seed_and_learns():
    data = mnist_digits(n_train=1000)
    a = train_small_cnn(*data["train"], loss="ce", epochs=5, seed=3)
    b = train_small_cnn(*data["train"], loss="ce", epochs=5, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = train_small_cnn(*data["train"], loss="ce", epochs=1, seed=4)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    images, labels = data["test"]
    x = (torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081
    with torch.no_grad():
        acc = (a(x[:, None]).argmax(1).numpy() == labels).mean()
    # Five epochs (80 SGD steps) on 1000 real digits reach ~0.8 on seeds 3-6 here: far above chance (0.1).
    # (One epoch on 600 digits, 10 steps of a one-cycle schedule, stayed near chance on the CI machine.)
    assert acc > 0.5
    assert np.bincount(labels).min() > 50


@pytest.mark.slow
def test_demo_data_files_are_keyed_by_n_train_and_seed(tmp_path):
    from repanalysis.train import make_demo_data

    small = make_demo_data(tmp_path, n_train=100)
    full = make_demo_data(tmp_path, n_train=4000)
    other_seed = make_demo_data(tmp_path, n_train=4000, seed=1)
    assert small["train"].name == "mnist_train_n100_s0.npz" and full["test"].name == "mnist_test_n4000_s0.npz"
    for data, (n_train, seed) in ((small, (100, 0)), (full, (4000, 0)), (other_seed, (4000, 1))):
        want = mnist_digits(n_train=n_train, seed=seed)
        for split in ("train", "test"):
            with np.load(data[split]) as z:      # each call gets its own split, not a stale file of another
                np.testing.assert_array_equal(z["labels"], want[split][1])
                np.testing.assert_array_equal(z["images"], want[split][0])
    with np.load(full["train"]) as z:
        assert len(z["labels"]) == 4000


@pytest.mark.parametrize("kw,pattern", [
    ({"n_train": 0}, "n_train must be an integer >= 1 and <= 4999; got 0"),
    ({"n_train": 5000}, "n_train .* got 5000"), ({"n_train": 2.5}, "n_train .* got 2.5"),
    ({"n_train": "100"}, "n_train .* got '100'"), ({"epochs": 0}, "epochs must be an integer >= 1; got 0"),
    ({"epochs": 1.5}, "epochs .* got 1.5"), ({"seed": -1}, "seed must be an integer >= 0; got -1"),
    ({"seed": 0.5}, "seed .* got 0.5"), ({"losses": ("ce", "bogus")}, "unknown loss 'bogus'"),
])
def test_demo_arguments_are_checked_before_anything_is_written(tmp_path, kw, pattern):
    from repanalysis.errors import DataError
    from repanalysis.train import make_demo_checkpoints

    with pytest.raises(DataError, match=pattern):
        make_demo_checkpoints(tmp_path / "out", **{"losses": ("ce",), **kw})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value,kind", [(5, "int"), (None, "None"), (["out"], "list"), (b"out", "bytes")])
def test_demo_folder_must_be_a_path(value, kind):
    from repanalysis.errors import DataError
    from repanalysis.train import make_demo_checkpoints

    with pytest.raises(DataError, match=rf"^folder: expected a file path \(str or os.PathLike\); got {kind}$"):
        make_demo_checkpoints(value, losses=("ce",))


@pytest.mark.parametrize("kw,pattern", [({"epochs": 0}, "epochs must be an integer >= 1"),
                                        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
                                        ({"lr": 0.0}, "lr must be a finite number > 0"),
                                        ({"loss": "bogus"}, "unknown loss 'bogus'")])
def test_train_small_cnn_checks_its_options(kw, pattern):
    from repanalysis.errors import DataError

    images, labels = mnist_digits(n_train=64)["train"]
    with pytest.raises(DataError, match=pattern):
        train_small_cnn(images, labels, **kw)


def test_demo_reuses_a_dump_only_when_it_is_of_the_same_run(tmp_path, real_checkpoints, real_data, monkeypatch):
    # the demo's Dumps are a cache keyed by the run fingerprint: a checkpoint retrained under the same name (or
    # other data) is extracted again, never served the old logits (the check used to be the data path only)
    import shutil

    import repanalysis as ra
    from repanalysis.extract import runner

    ck = tmp_path / "ce_e8_n4000_s0.pth"
    shutil.copy(real_checkpoints["CE"], ck)
    kw = {"progress": False, "overwrite": True, "reuse": True, "workers": 0, "batch_size": 256}
    first = ra.extract(ra.load_model(ck), real_data["test"], tmp_path / "d", **kw)
    with monkeypatch.context() as m:
        m.setattr(runner, "_run", lambda *a, **k: pytest.fail("extracted again"))
        again = ra.extract(ra.load_model(ck), real_data["test"], tmp_path / "d", **kw)
    np.testing.assert_array_equal(again.logits, first.logits)
    shutil.copy(real_checkpoints["LS"], ck)                    # "retrained": same file name, other weights
    new = ra.extract(ra.load_model(ck), real_data["test"], tmp_path / "d", **kw)
    assert new.meta["checkpoint"]["sha256"] != first.meta["checkpoint"]["sha256"]
    assert not np.array_equal(np.asarray(new.logits), np.asarray(first.logits))


# bad input to the trainer: one DataError naming what is wrong, before any training or writing

from repanalysis.errors import DataError  # noqa: E402


@pytest.fixture(scope="module")
def digits64():
    images, labels = mnist_digits(n_train=64)["train"]
    return images, labels


def _same_weights(a, b) -> bool:
    return all(ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in zip(a.state_dict().items(),
                                                                             b.state_dict().items()))


def test_float_images_in_0_1_are_not_divided_by_255_again(digits64):
    images, labels = digits64
    kw = {"epochs": 1, "batch_size": 32, "width": 4, "seed": 1}
    ref = train_small_cnn(images, labels, **kw)
    as_unit = train_small_cnn(images.astype(np.float32) / np.float32(255), labels, **kw)
    as_255 = train_small_cnn(images.astype(np.float64), labels, **kw)
    assert _same_weights(ref, as_unit) and _same_weights(ref, as_255)
    other = train_small_cnn(images.astype(np.float32) / np.float32(255 * 255), labels, **kw)
    assert not _same_weights(ref, other)         # what the old code made of [0, 1] images: near-black input


@pytest.mark.parametrize("make,pattern", [
    (lambda x, y: (x[:50], y[:40]), r"^labels must have one entry per sample \(50\); got 40$"),
    (lambda x, y: (x, np.where(y == 3, 10, y)), r"^labels must lie in \[0, 9\] for 10 classes; found values in "
                                                r"\[0, 10\]$"),
    (lambda x, y: (x, y - 1), r"^labels must lie in \[0, 9\] for 10 classes; found values in \[-1, 8\]$"),
    (lambda x, y: (x, y + 0.5), r"^labels must be integer class indices; got non-integer values$"),
    (lambda x, y: (x[:0], y[:0]), r"^images is empty; expected at least one image$"),
    (lambda x, y: (x.astype(np.float32) * 2, y), r"^image values must lie in 0..255 \(integers\) or \[0, 1\] "
                                                 r"\(floats\); found values in \[0.0, 510.0\]$"),
    (lambda x, y: (x.astype(np.float32) - 1, y), r"^image values must lie in 0..255 .* found values in \[-1.0, "),
    (lambda x, y: (np.where(x > 0, np.nan, 0.0), y), r"^images hold NaN or infinite values"),
    (lambda x, y: (x.astype(np.int16) * 2, y), r"^image values .* found values in \[0, 510\]$"),
    (lambda x, y: (x[..., None], y), r"^images must be grayscale \[N, H, W\]; got shape \(64, 28, 28, 1\)$"),
    (lambda x, y: (x[:, :3, :3], y), r"^images must be at least 4x4 pixels; got 3x3$"),
    (lambda x, y: (x > 0, y), r"^images must be integers 0..255 or floats .* got dtype bool$"),
])
def test_train_small_cnn_refuses_bad_data(digits64, make, pattern):
    images, labels = make(*digits64)
    with pytest.raises(DataError, match=pattern):
        train_small_cnn(images, labels, epochs=1, width=4)


@pytest.mark.parametrize("kw,pattern", [
    ({"loss": "ls", "loss_kwargs": {"alpha": 2}}, r"^ls loss option alpha must be a finite number >= 0 and <= 1; "
                                                  r"got 2$"),
    ({"loss": "ls", "loss_kwargs": {"alpha": "0.1"}}, r"^ls loss option alpha .* got '0.1'$"),
    ({"loss": "ls", "loss_kwargs": {"beta": 1}}, r"^loss 'ls' takes no option 'beta'; expected alpha, alpha_start, "
                                                 r"alpha_end, alpha_schedule$"),
    ({"loss": "ls", "loss_kwargs": {"name": "ce"}}, r"^loss 'ls' takes no option 'name'; expected alpha, "),
    ({"loss": "ls", "loss_kwargs": {"alpha_end": 1.5}}, r"^ls loss option alpha_end must be a finite number >= 0 "
                                                        r"and <= 1; got 1.5$"),
    ({"loss": "ls", "loss_kwargs": {"alpha_schedule": "cosine"}}, r"^ls loss option alpha_schedule must be one of "
                                                                  r"linear, constant; got 'cosine'$"),
    ({"loss": "maxsup", "loss_kwargs": {"alpha": 0.1, "alpha_schedule": "linear"}},
     r"^maxsup loss option alpha \(a constant alpha\) cannot be combined with alpha_schedule; expected alpha "
     r"alone, or alpha_start / alpha_end / alpha_schedule$"),
    ({"loss": "ce", "loss_kwargs": {"alpha": 0.1}}, r"^loss 'ce' takes no options; got 'alpha'$"),
    ({"loss": "maxsup", "loss_kwargs": [0.1]}, r"^loss_kwargs must be a dict of the loss's options; got list$"),
    ({"num_classes": 1}, r"^num_classes must be an integer >= 2; got 1$"),
    ({"width": 0}, r"^width must be an integer >= 1; got 0$"),
])
def test_train_small_cnn_refuses_bad_loss_options(digits64, kw, pattern):
    with pytest.raises(DataError, match=pattern):
        train_small_cnn(*digits64, epochs=1, **kw)


def test_a_diverging_run_stops_naming_the_epoch_and_step(digits64):
    with pytest.raises(DataError, match=r"^training diverged: the ce loss became (nan|inf) at epoch [12]/2, step "
                                        r"[1-4]/4 \(lr=100000000.0\); expected a finite loss: use a lower lr$"):
        train_small_cnn(*digits64, lr=1e8, epochs=2, batch_size=32, width=4)


@pytest.mark.parametrize("losses,pattern", [
    ((), r"^losses is empty; expected a loss name or a sequence of them \(ce, ls, maxsup, logit_penalty\)"),
    (None, r"^losses: expected a loss name or a sequence of them .*; got None$"),
    (5, r"^losses: expected .*; got int$"),
    (("ce", "CE"), r"^losses names 'ce' more than once; expected distinct losses$"),
])
def test_demo_losses_must_name_at_least_one_loss(tmp_path, losses, pattern):
    from repanalysis.train import make_demo_checkpoints

    with pytest.raises(DataError, match=pattern):
        make_demo_checkpoints(tmp_path / "out", losses=losses)
    assert not (tmp_path / "out").exists()


def test_demo_folder_that_is_a_file_is_refused(tmp_path):
    from repanalysis.train import make_demo_checkpoints, make_demo_data

    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    for call in (lambda: make_demo_checkpoints(file, losses=("ce",)), lambda: make_demo_data(file)):
        with pytest.raises(DataError, match=rf"^folder {file} is a file; expected a folder for the demo's data"):
            call()
    assert file.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_failed_data_write_is_one_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from repanalysis.train import make_demo_data

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(DataError, match=r"^cannot write .*mnist_train_n100_s0.npz: No space left on device; "
                                        r"expected a writable folder$"):
        make_demo_data(tmp_path, n_train=100)
    assert list((tmp_path / "data").iterdir()) == []


def test_half_and_bfloat16_torch_images_train_like_uint8(digits64):
    # numpy has no bfloat16: such tensors raised torch's own TypeError; 0..255 values are exact in both
    images, labels = digits64
    kw = {"epochs": 1, "batch_size": 32, "width": 4, "seed": 1}
    ref = train_small_cnn(images, labels, **kw)
    for dtype in (torch.bfloat16, torch.float16):
        assert _same_weights(ref, train_small_cnn(torch.from_numpy(images).to(dtype), labels, **kw)), dtype


# the alpha schedule of LS and MaxSup (MaxSup paper Sec. 5.1.1, App. F, Table 8: both linear 0.1 -> 0.2)

def _ls_term(z, y):           # MaxSup Theorem 3.3: L_LS - CE = alpha * (z_y - mean_k z_k)
    return (z.gather(1, y[:, None])[:, 0] - z.mean(1)).mean()


def _maxsup_term(z, y):       # MaxSup Eq. 8: alpha * (z_max - mean_k z_k)
    return (z.max(1).values - z.mean(1)).mean()


def _spy_steps(monkeypatch):
    """Record (logits, labels, loss value) of every training step, through the trainer's own criterion."""
    from repanalysis.train import trainer

    steps, real = [], trainer.make_loss

    def spying_make_loss(name, **kwargs):
        criterion = real(name, **kwargs)

        def call(logits, labels, progress=0.0):
            value = criterion(logits, labels, progress=progress)
            steps.append((logits.detach().double(), labels.clone(), float(value.detach())))
            return value
        return call

    monkeypatch.setattr(trainer, "make_loss", spying_make_loss)
    return steps


@pytest.mark.parametrize("loss,term", [("ls", _ls_term), ("maxsup", _maxsup_term)])
@pytest.mark.parametrize("loss_kwargs", [None, {"alpha_schedule": "constant"}])
def test_alpha_follows_the_schedule_at_every_training_step(digits64, monkeypatch, loss, term, loss_kwargs):
    steps = _spy_steps(monkeypatch)
    train_small_cnn(*digits64, loss=loss, loss_kwargs=loss_kwargs, epochs=2, batch_size=16, width=4, seed=2)
    total = 2 * 64 // 16
    assert len(steps) == total
    if loss_kwargs is None:                                        # linear 0.1 -> 0.2 over the steps, both ends hit
        alphas = [0.1 + 0.1 * s / (total - 1) for s in range(total)]
    else:
        alphas = [0.1] * total
    for s, ((z, y, value), alpha) in enumerate(zip(steps, alphas)):
        want = float(F.cross_entropy(z, y) + alpha * term(z, y))
        assert value == pytest.approx(want, rel=1e-5, abs=1e-6), (s, value, want)
    # the two schedules are told apart by the check above: the last step differs by 0.1 * term
    z, y, value = steps[-1]
    other = 0.1 if loss_kwargs is None else 0.2
    assert abs(value - float(F.cross_entropy(z, y) + other * term(z, y))) > 1e-3


def test_make_loss_schedules_both_ls_and_maxsup_by_default():
    z = torch.randn(32, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (32,))
    for name, term in (("ls", _ls_term), ("maxsup", _maxsup_term)):
        for progress, alpha in ((0.0, 0.1), (0.25, 0.125), (1.0, 0.2), (1.5, 0.2)):
            torch.testing.assert_close(make_loss(name)(z, y, progress=progress),
                                       F.cross_entropy(z, y) + alpha * term(z, y))
            torch.testing.assert_close(make_loss(name, alpha_schedule="constant")(z, y, progress=progress),
                                       F.cross_entropy(z, y) + 0.1 * term(z, y))
            torch.testing.assert_close(make_loss(name, alpha=0.3)(z, y, progress=progress),      # a constant alpha
                                       F.cross_entropy(z, y) + 0.3 * term(z, y))


def test_training_draws_one_progress_bar_step_per_sgd_step(digits64, monkeypatch):
    from repanalysis.train import trainer

    bars = record_bars(monkeypatch, trainer)
    train_small_cnn(*digits64, epochs=2, batch_size=20, width=4)               # 64 images: 4 steps per epoch
    train_small_cnn(*digits64, epochs=1, batch_size=20, width=4, progress=False)
    assert [(b.total, b.n, b.kw["unit"], b.kw["enabled"]) for b in bars] == [(8, 8, "step", True),
                                                                                (4, 4, "step", False)]


def test_demo_checkpoints_schedule_ls_and_name_the_constant_option(tmp_path, monkeypatch):
    from repanalysis.train import make_demo_checkpoints
    from repanalysis.train import trainer

    kw = {"losses": ("ls",), "epochs": 1, "n_train": 100, "progress": False}
    linear, _ = make_demo_checkpoints(tmp_path, **kw)
    constant, _ = make_demo_checkpoints(tmp_path, alpha_schedule="constant", **kw)
    assert linear["LS"].name == "ls_e1_n100_s0.pth" and constant["LS"].name == "ls_constant_e1_n100_s0.pth"
    a, b = (torch.load(p, weights_only=True) for p in (linear["LS"], constant["LS"]))
    assert a["repanalysis"]["alpha_schedule"] == "linear" and b["repanalysis"]["alpha_schedule"] == "constant"
    images, labels = mnist_digits(n_train=100)["train"]
    want = train_small_cnn(images, labels, loss="ls", epochs=1, loss_kwargs={"alpha_schedule": "linear"},
                           progress=False).state_dict()
    assert all(torch.equal(a["state_dict"][k], v) for k, v in want.items())   # what the trainer makes on its own
    assert not torch.equal(a["state_dict"]["fc.weight"], b["state_dict"]["fc.weight"])

    # an LS checkpoint cached before the option (constant alpha, no schedule recorded) is trained again
    del b["repanalysis"]["alpha_schedule"]
    torch.save(b, linear["LS"])
    again, _ = make_demo_checkpoints(tmp_path, **kw)
    assert torch.equal(torch.load(again["LS"], weights_only=True)["state_dict"]["fc.weight"],
                       a["state_dict"]["fc.weight"])
    # checkpoints of the asked schedule are reused, not trained again
    monkeypatch.setattr(trainer, "train_small_cnn", lambda *a, **k: pytest.fail("trained again"))
    make_demo_checkpoints(tmp_path, **kw)
    make_demo_checkpoints(tmp_path, alpha_schedule="constant", **kw)
    with pytest.raises(DataError, match=r"^alpha_schedule must be one of linear, constant; got 'cosine'$"):
        make_demo_checkpoints(tmp_path / "new", alpha_schedule="cosine", **kw)
    assert not (tmp_path / "new").exists()
