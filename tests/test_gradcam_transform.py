"""Grad-CAM at another resolution: --resolution/--crop-ratio/--interpolation/--mean/--std (one option set shared
with extract/logits), ``localise_checkpoints(transform=...)``, boxes mapped through exactly that resize + crop
(checked against torchvision's Resize/CenterCrop and a hand-computed box mapping), and the progress bar."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import repanalysis as ra  # noqa: F401  (before torchvision / pytorch_grad_cam)
from repanalysis.analyze import cam as C
from repanalysis.data.transforms import EvalTransform, check_transform_overrides, override_transform
from repanalysis.errors import ConfigError, DataError
from _bars import record_bars
from _cli import run_cli

W, H = 36, 28            # original image size: wider than tall, so the centre crop cuts the sides
X_OFFSET = 6             # the 28x28 digit is pasted at columns 6..33
RESOLUTION, CROP = 20, 0.8
# torchvision's Resize(floor(20 / 0.8) = 25) on 36x28: short side 28 -> 25, long side int(25 * 36 / 28) = 32;
# CenterCrop(20) on 32x25: left = int(round((32 - 20) / 2)) = 6, top = int(round((25 - 20) / 2)) = 2
RESIZED, LEFT, TOP = (32, 25), 6, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits(real_data, tmp_path_factory):
    """An ImageFolder of 4 real MNIST test digits on 36x28 canvases (class folders named like the checkpoints'
    classes) and a flat box file with each digit's tight box: (folder, boxes.csv, [(name, label, box)])."""
    from repanalysis.train.trainer import DIGIT_NAMES

    arrays = np.load(real_data["test"])
    images, labels = arrays["images"], arrays["labels"]
    root = tmp_path_factory.mktemp("gc_transform")
    folder, rows, items = root / "data", ["path,x0,y0,x1,y1"], []
    for i in range(4):
        canvas = np.zeros((H, W), np.uint8)
        canvas[:, X_OFFSET:X_OFFSET + 28] = images[i]
        name = f"{DIGIT_NAMES[int(labels[i])]}/{i}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas).save(folder / name)
        ys, xs = np.nonzero(canvas)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        rows.append(f"{name},{','.join(map(str, box))}")
        items.append((name, int(labels[i]), box))
    boxes = root / "boxes.csv"
    boxes.write_text("\n".join(rows) + "\n")
    return folder, boxes, sorted(items)


def _hand_mask(box) -> np.ndarray:
    """The box mapped through Resize(25) + CenterCrop(20) by hand, as a 20x20 pixel-centre mask."""
    sx, sy = RESIZED[0] / W, RESIZED[1] / H
    x0, x1 = np.clip([box[0] * sx - LEFT, box[2] * sx - LEFT], 0, RESOLUTION)
    y0, y1 = np.clip([box[1] * sy - TOP, box[3] * sy - TOP], 0, RESOLUTION)
    c = np.arange(RESOLUTION) + 0.5
    return ((c[:, None] >= y0) & (c[:, None] <= y1)) & ((c[None, :] >= x0) & (c[None, :] <= x1))


def _reference_cams(checkpoint, folder, items):
    """pytorch-grad-cam on pixels made by torchvision's own Resize / CenterCrop / Normalize."""
    import torchvision.transforms as T
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = ra.load_model(checkpoint).model.eval()
    mean, std = model_stats(checkpoint)
    pipeline = T.Compose([T.Resize(int(RESOLUTION / CROP), interpolation=T.InterpolationMode.BILINEAR),
                          T.CenterCrop(RESOLUTION), T.ToTensor(), T.Normalize(mean, std)])
    x = torch.stack([pipeline(Image.open(folder / name).convert("L")) for name, _, _ in items])
    with GradCAM(model=model, target_layers=[model.features]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(y) for _, y, _ in items])


def model_stats(checkpoint):
    t = ra.load_model(checkpoint).transform
    return t.mean, t.std


def test_override_transform_fields_channels_and_bad_values():
    base = EvalTransform(resolution=None, mean=(0.1,), std=(0.3,), channels=1)
    t = override_transform(base, resolution=RESOLUTION, crop_ratio=CROP, interpolation="bicubic")
    assert (t.resolution, t.crop_ratio, t.interpolation, t.mean, t.channels) == (20, 0.8, "bicubic", (0.1,), 1)
    assert t.resize_size(W, H) == RESIZED and t.crop_box(W, H) == (LEFT, TOP, LEFT + 20, TOP + 20)
    assert override_transform(base) is base
    rgb = override_transform(base, mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2))     # both: the channel count follows
    assert rgb.channels == 3 and rgb.std == (0.2, 0.2, 0.2)
    assert override_transform(EvalTransform(), mean=0.5, std=0.25).channels == 1   # one value each: grayscale
    for kwargs, message in [
        (dict(mean=(0.1, 0.2), std=(0.3, 0.4, 0.5)), "mean has 2 values but std has 3; expected the same number"),
        (dict(mean=(0.1, 0.2, 0.3)), r"mean has 3 value\(s\) but the transform's std has 1 \(1-channel input\)"),
        (dict(crop_ratio=0.5), "crop ratio 0.5 has no effect: the transform feeds images at their own size"),
        (dict(resolution=0), "resolution must be an integer >= 1"),
        (dict(resolution=2.5), "resolution must be an integer >= 1"),
        (dict(crop_ratio=1.5), r"crop ratio must be in \(0, 1\]"),
        (dict(crop_ratio=float("nan")), r"crop ratio must be in \(0, 1\]"),
        (dict(interpolation="cubic"), "unknown interpolation 'cubic'"),
        (dict(std=(0.0,)), "std must be finite and greater than 0"),
        (dict(mean=(float("inf"),)), "mean must be finite"),
        (dict(size=3), "unknown transform override 'size'"),
    ]:
        with pytest.raises(DataError, match=message) as err:
            override_transform(base, **kwargs)
        assert "\n" not in str(err.value)
    assert check_transform_overrides(resolution=None, mean=None) == {}


def test_interpolation_choices_are_the_transforms_own():
    import click

    from repanalysis.cli.common import TRANSFORM_OPTIONS
    from repanalysis.data.transforms import _INTERPOLATIONS

    @click.command()
    def probe():
        pass

    for option in TRANSFORM_OPTIONS:
        probe = option(probe)
    choice = next(p for p in probe.params if p.name == "interpolation").type
    assert sorted(choice.choices) == sorted(_INTERPOLATIONS)
    # extract / logits get exactly the same five options as gradcam
    from repanalysis.cli.extract import command as extract
    from repanalysis.cli.gradcam import command as gradcam

    for command in (extract, gradcam):
        names = [p.name for p in command.params]
        assert {"resolution", "crop_ratio", "interpolation", "mean", "std"} <= set(names)
        assert all(names.count(n) == 1 for n in names)


def test_localise_at_another_resolution_maps_boxes_through_that_resize_and_crop(real_checkpoints, digits):
    folder, boxes, items = digits
    ckpts = [real_checkpoints["CE"], real_checkpoints["LS"]]
    results, _ = C.localise_checkpoints(ckpts, folder, boxes, transform={"resolution": RESOLUTION, "crop_ratio": CROP},
                                        keep=4, workers=0, progress=False)
    for ckpt, res in zip(ckpts, results):
        assert res.sample_names == [name for name, _, _ in items]
        ref = _reference_cams(ckpt, folder, items)
        assert ref.shape == (4, RESOLUTION, RESOLUTION)
        for example, (name, label, box), ref_cam in zip(res.examples, items, ref):
            assert example.name == name and example.label == label
            assert example.cam.shape == (RESOLUTION, RESOLUTION) and example.image.shape == (20, 20, 3)
            np.testing.assert_array_equal(example.region, _hand_mask(box))
            np.testing.assert_allclose(example.cam.astype(np.float32), ref_cam, atol=1e-3)   # stored as float16
        # per-image precision / recall from the reference CAMs and the hand masks
        masks = np.stack([_hand_mask(box) for _, _, box in items])
        cam_masks = ref >= 0.5
        inter = (cam_masks & masks).sum((1, 2))
        np.testing.assert_allclose(res.precision, inter / cam_masks.sum((1, 2)), atol=1e-6)
        np.testing.assert_allclose(res.recall, inter / masks.sum((1, 2)), atol=1e-6)
    # a whole EvalTransform is used as it is (here: no resize, a 16x16 centre crop of the 36x28 image)
    t = EvalTransform(resolution=16, crop_ratio=1.0, mean=(0.5,), std=(0.5,), channels=1)
    (res,), _ = C.localise_checkpoints(ckpts[:1], folder, boxes, transform=t, keep=1, workers=0, progress=False)
    assert res.examples[0].cam.shape == (16, 16)
    # 36x28 -> short side 16: int(16 * 36 / 28) = 20 wide, so x scales by 20 / 36, y by 16 / 28; crop left 2
    x0, y0 = items[0][2][0] * 20 / 36 - 2, items[0][2][1] * 16 / 28
    np.testing.assert_allclose(res.examples[0].boxes[0, :2], [x0, y0])
    # without overrides the model's own transform (no resize): CAMs of the whole 36x28 image
    (own,), _ = C.localise_checkpoints(ckpts[:1], folder, boxes, keep=1, workers=0, progress=False)
    assert own.examples[0].cam.shape == (H, W)
    with pytest.raises(ConfigError, match="unknown transform override 'size'"):
        C.localise_checkpoints(ckpts[:1], folder, boxes, transform={"size": 3})
    with pytest.raises(ConfigError, match="transform must be None, a dict of overrides"):
        C.localise_checkpoints(ckpts[:1], folder, boxes, transform=lambda im: im)
    with pytest.raises(DataError, match="mean has 2 values but std has 3"):
        C.localise_checkpoints(["no-such.pth"], folder, boxes, transform={"mean": (0, 1), "std": (1, 1, 1)})


def test_cli_gradcam_with_transform_flags_end_to_end(real_checkpoints, digits, tmp_path, capsys):
    folder, boxes, items = digits
    out = tmp_path / "out"
    code, stdout, err = run_cli(["gradcam", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(folder),
                                 "--boxes", str(boxes), "--workers", "0", "--show", "2", "--out", str(out),
                                 "--resolution", str(RESOLUTION), "--crop-ratio", str(CROP), "--quiet", "--json"],
                                capsys)
    assert code == 0, err
    assert json.loads(stdout)["models"][0]["summary"]["images"] == 4
    with open(out / "gradcam_per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [name for name, _, _ in items]
    ref = _reference_cams(real_checkpoints["CE"], folder, items)
    masks = np.stack([_hand_mask(box) for _, _, box in items])
    inter = ((ref >= 0.5) & masks).sum((1, 2))
    np.testing.assert_allclose([float(r["recall"]) for r in rows], inter / masks.sum((1, 2)), atol=1e-6)
    np.testing.assert_allclose([float(r["precision"]) for r in rows], inter / (ref >= 0.5).sum((1, 2)), atol=1e-6)


@pytest.mark.parametrize("command", ["gradcam", "logits"])
@pytest.mark.parametrize("flags, message", [
    (["--mean", "0.1,0.2", "--std", "0.3,0.4,0.5"],
     "error: normalisation mean has 2 values but std has 3; expected the same number in both"),
    (["--mean", "0.1,x"], "expected comma-separated numbers, got '0.1,x'"),
    (["--crop-ratio", "0"], "--crop-ratio"),
    (["--interpolation", "cubic"], "--interpolation"),
    (["--std", "0"], "std must be finite and greater than 0"),
])
def test_bad_transform_flags_are_one_error_line_before_the_checkpoint_is_read(command, flags, message, tmp_path,
                                                                              capsys):
    missing = tmp_path / "missing.pth"            # never opened: the flags are refused first
    args = (["gradcam", "--checkpoint", str(missing), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
            if command == "gradcam" else ["logits", "--checkpoint", str(missing), "--data", str(tmp_path),
                                          "--output", str(tmp_path / "o")])
    code, _, err = run_cli([*args, *flags], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert "missing.pth" not in err and "Traceback" not in err


def test_channel_count_mismatch_after_loading_is_one_error_line(real_checkpoints, digits, tmp_path, capsys):
    folder, boxes, _ = digits
    code, _, err = run_cli(["gradcam", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(folder), "--boxes",
                            str(boxes), "--workers", "0", "--out", str(tmp_path / "o"), "--mean", "0.1,0.2,0.3"],
                           capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "error: normalisation mean has 3 value(s) but the transform's std has 1 (1-channel input)" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_gradcam_progress_bar_counts_images_and_quiet_turns_it_off(real_checkpoints, digits, tmp_path, capsys,
                                                                   monkeypatch, quiet):
    folder, boxes, items = digits
    calls = record_bars(monkeypatch, C)
    code, _, err = run_cli(["gradcam", "--checkpoint", str(real_checkpoints["CE"]), "--checkpoint",
                            str(real_checkpoints["MaxSup"]), "--data", str(folder), "--boxes", str(boxes),
                            "--workers", "0", "--batch-size", "3", "--limit", "3", "--out", str(tmp_path / "o"),
                            "--names", "CE,MaxSup", "--method", "layercam", *(["--quiet"] if quiet else [])], capsys)
    assert code == 0, err
    # one bar per model, counting the scored images (3 of 4: --limit) batch by batch
    assert [(c.total, c.kw["unit"], c.kw["enabled"], c.updates, c.kw["desc"]) for c in calls] == \
        [(3, "img", not quiet, [3], f"layercam {name}") for name in ("CE", "MaxSup")]
