"""decode="device": bytes from the workers, decode + resize + crop + normalise on the extraction device.

torchvision's image extension does not load beside this machine's CPU torch, so the decoder itself (batched
decode_jpeg, nvJPEG on a GPU) cannot run here; these tests put a PIL decoder in its place (same contract: uint8
[C, H, W] on the device) and check everything around it against the CPU path (EvalTransform on PIL images), which
stays the reference."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from repanalysis.data import EvalTransform
from repanalysis.data import device_decode


def pil_decoder(encoded, channels, device):
    out = []
    for b in encoded:
        image = Image.open(io.BytesIO(b.numpy().tobytes())).convert("RGB" if channels == 3 else "L")
        a = np.asarray(image)
        a = a[:, :, None] if a.ndim == 2 else a
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1).to(device))
    return out


@pytest.fixture
def photo_folder(tmp_path):
    """JPEGs of real photos in several sizes and shapes (portrait, landscape, grey) and one PNG, two classes."""
    import skimage.data as sk

    photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), np.stack([sk.camera()] * 3, -1)]
    sizes = [(300, 200), (180, 260), (257, 257), (500, 333), (96, 128)]
    for i, (img, size) in enumerate(zip(photos, sizes)):
        folder = tmp_path / "data" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(img).resize(size)
        if i == 4:
            pil.convert("L").save(folder / f"{i}.jpg", quality=90)       # a greyscale JPEG
        else:
            pil.save(folder / f"{i}.jpg", quality=90)
    Image.fromarray(photos[0]).resize((150, 170)).save(tmp_path / "data" / "class1" / "5.png")
    return tmp_path / "data"


@pytest.fixture
def pil_in_place_of_torchvision(monkeypatch):
    monkeypatch.setattr(device_decode, "_torchvision_decoder", pil_decoder)
    monkeypatch.setattr(device_decode, "torchvision_decoding_error", lambda: None)


@pytest.mark.parametrize("transform", [EvalTransform(resolution=64, crop_ratio=0.875),
                                       EvalTransform(resolution=96, crop_ratio=1.0, interpolation="bicubic"),
                                       EvalTransform(resolution=None)])
def test_decode_batch_matches_the_pil_transform(photo_folder, transform):
    files = sorted(photo_folder.rglob("*.jpg"))
    if transform.resolution is None:
        files = files[:1]                    # no resize: images keep their sizes, so one per batch
    encoded = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    got = device_decode.decode_batch(encoded, transform, torch.device("cpu"), decoder=pil_decoder)
    want = torch.stack([transform(Image.open(f)) for f in files])
    assert got.shape == want.shape and got.dtype == torch.float32
    # same geometry; the antialiased filters of torch and PIL round differently by at most a few 1/255 steps
    step = 1 / 255 / min(transform.std)
    diff = (got - want).abs()
    assert float(diff.max()) <= 3 * step
    assert float(diff.mean()) <= 0.1 * step
    if transform.resolution is None:
        assert float(diff.max()) == 0.0      # no filtering at all: the same pixels exactly


def test_extract_with_device_decoding_equals_the_pil_path_up_to_rounding(tmp_path, photo_folder,
                                                                          pil_in_place_of_torchvision):
    import repanalysis as ra

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 2))
    t = EvalTransform(resolution=64)
    kw = dict(transform=t, batch_size=4, workers=0, progress=False, channels_last=False)
    ref = ra.extract(net, photo_folder, tmp_path / "pil", **kw)
    dev = ra.extract(net, photo_folder, tmp_path / "dev", decode="device", **kw)
    assert np.array_equal(dev.ids, ref.ids) and np.array_equal(dev.labels, ref.labels)
    assert np.allclose(dev.logits, ref.logits, atol=2e-3)
    assert np.allclose(dev.features, ref.features, atol=2e-3)
    assert dev.meta["decode"] == "device" and "decode" not in ref.meta
    assert dev.meta["fingerprint"] != ref.meta["fingerprint"]          # a different run, never mixed up


def test_device_decoding_refusals_are_one_line(tmp_path, capsys, photo_folder, real_checkpoints, real_data):
    import repanalysis as ra
    from repanalysis.errors import DataError
    from tests._cli import run_cli

    code, _, err = run_cli(["extract", "--checkpoint", str(real_checkpoints["CE"]), "--data", str(real_data["test"]),
                            "--output", str(tmp_path / "o"), "--decode", "device", "--quiet"], capsys)
    assert code != 0 and "reads image files" in err and "array" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    if device_decode.torchvision_decoding_error() is not None:         # this machine: say why, and the way out
        with pytest.raises(DataError, match="torchvision cannot decode images here.*decode='pil'"):
            ra.extract(net, photo_folder, tmp_path / "o", transform=EvalTransform(resolution=32), decode="device")
    with pytest.raises(DataError, match="no 'lanczos' filter"):
        ra.extract(net, photo_folder, tmp_path / "o", transform=EvalTransform(resolution=32, interpolation="lanczos"),
                   decode="device")
    with pytest.raises(DataError, match="unknown decode 'gpu'"):
        ra.extract(net, photo_folder, tmp_path / "o", transform=EvalTransform(resolution=32), decode="gpu")
