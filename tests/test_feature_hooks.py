"""fc(features) == logits through the project's own path (checkpoint -> load_model -> extract) for the
architecture families users bring: torchvision EfficientNet, MobileNetV3, VGG, ConvNeXt, Swin, ViT and timm
ConvNeXt, Swin, EVA, and the two-head models that average their heads (distilled DeiT, LeViT). Random weights
(no downloads); the classifier's weights and bias are re-drawn so that the logits are not degenerate
(torchvision's ViT head starts at zero)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import repanalysis as ra  # noqa: F401  (first: applies the torchvision compatibility fix)
from repanalysis.data.datasets import open_dataset
from repanalysis.data.transforms import EvalTransform
from repanalysis.models.loading import load_model

K = 7

# (arch as --arch takes it, the final linear layer's name written out by hand ('a+b': two heads averaged),
#  the feature width D, eval resolution: an int overrides the architecture's transform with a small centre
#  crop, None keeps it)
CASES = [
    pytest.param("efficientnet_b0", "classifier.1", 1280, 64, id="tv-efficientnet_b0"),
    pytest.param("mobilenet_v3_small", "classifier.3", 1024, 64, id="tv-mobilenet_v3_small"),
    pytest.param("vgg11", "classifier.6", 4096, 64, id="tv-vgg11", marks=pytest.mark.slow),
    pytest.param("convnext_tiny", "classifier.2", 768, 64, id="tv-convnext_tiny", marks=pytest.mark.slow),
    pytest.param("swin_t", "head", 768, None, id="tv-swin_t", marks=pytest.mark.slow),
    pytest.param("vit_b_16", "heads.head", 768, None, id="tv-vit_b_16", marks=pytest.mark.slow),
    pytest.param("timm/convnext_atto", "head.fc", 320, 64, id="timm-convnext_atto"),
    pytest.param("timm/swin_tiny_patch4_window7_224", "head.fc", 768, None, id="timm-swin_tiny",
                 marks=pytest.mark.slow),
    pytest.param("timm/eva02_tiny_patch14_224", "head", 192, None, id="timm-eva02_tiny"),
    # logits = (head(cls token) + head_dist(distillation token)) / 2: features are both inputs, concatenated
    pytest.param("timm/deit_tiny_distilled_patch16_224", "head+head_dist", 2 * 192, None, id="timm-deit_distilled"),
    pytest.param("timm/levit_128s", "head.linear+head_dist.linear", 2 * 384, None, id="timm-levit_128s"),
]


def _build(arch: str) -> torch.nn.Module:
    """The network built directly by its library (not through repanalysis' registry)."""
    if arch.startswith("timm/"):
        import timm

        return timm.create_model(arch[5:], pretrained=False, num_classes=K)
    import torchvision.models as tvm

    return tvm.get_model(arch, weights=None, num_classes=K)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two random 64x64 RGB images, one per class folder."""
    root = tmp_path_factory.mktemp("random_images")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / cls / "x.png")
    return root


@pytest.mark.parametrize("arch, head, width, resolution", CASES)
def test_features_through_the_classifier_give_the_logits(tmp_path, image_folder, arch, head, width, resolution):
    torch.manual_seed(0)
    net = _build(arch).eval()
    heads = [net.get_submodule(name) for name in head.split("+")]
    for fc in heads:
        assert isinstance(fc, torch.nn.Linear) and fc.out_features == K
        with torch.no_grad():           # a head that is not all zeros, with a bias that matters
            fc.weight.normal_(0, 0.05)
            fc.bias.normal_(0, 1.0)
    # the averaged heads' weights side by side (one head: its own weights)
    w_expected = np.hstack([fc.weight.detach().double().numpy() for fc in heads]) / len(heads)
    b_expected = np.mean([fc.bias.detach().double().numpy() for fc in heads], axis=0)
    assert w_expected.shape == (K, width)
    path = tmp_path / "model.pth"
    torch.save(net.state_dict(), path)

    lm = load_model(path, arch=arch)
    assert lm.classifier_name == head and lm.num_classes == K
    transform = lm.transform if resolution is None else EvalTransform(resolution=resolution, crop_ratio=1.0)
    dump = ra.extract(lm, image_folder, tmp_path / "dump", transform=transform, device="cpu", batch_size=2,
                      workers=0, progress=False)

    features, logits = np.asarray(dump.features, np.float64), np.asarray(dump.logits, np.float64)
    w, b = np.asarray(dump.classifier_weight, np.float64), np.asarray(dump.classifier_bias, np.float64)
    assert features.shape == (2, width) and logits.shape == (2, K)
    np.testing.assert_allclose(w, w_expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(b, b_expected, rtol=1e-6, atol=1e-7)
    assert np.abs(logits).max() > 0.1 and np.ptp(features) > 0          # nothing degenerate
    # the hooked features are the classifier's exact input: fc(features) == logits
    np.testing.assert_allclose(features @ w.T + b, logits, rtol=1e-5, atol=1e-5)

    # and the logits are the original network's own forward on the same preprocessed images
    ds = open_dataset(image_folder, transform=transform)
    x = torch.stack([ds[int(i)][0] for i in np.asarray(dump.ids)])
    with torch.no_grad():
        expected = net(x).double().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
