"""CAM computation: an exact synthetic case, agreement with pytorch-grad-cam one image at a time,
target layers per family, hooks released, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import repanalysis  # noqa: F401  (before torchvision / timm / pytorch_grad_cam)
from repanalysis.analyze import cam as C
from repanalysis.analyze.localisation import boxes_to_mask, localisation_scores
from repanalysis.errors import ConfigError, DataError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only thrash
    yield
    torch.set_num_threads(n)


class TwoSquares(nn.Module):
    """Class 0's evidence is the red channel, class 1's the green one, read at stride 4:
    features = avgpool4(relu(x[:, :2])), logit_k = sum of feature map k. Grad-CAM for class k is then
    exactly the (upsampled) feature map k: the square of that colour."""

    def __init__(self):
        super().__init__()
        self.select = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.select.weight.zero_()
            self.select.weight[0, 0] = 1.0
            self.select.weight[1, 1] = 1.0
        self.features = nn.Sequential(self.select, nn.ReLU(), nn.AvgPool2d(4))

    def forward(self, x):
        return self.features(x).sum(dim=(2, 3))


def _two_square_images(n):
    """n images 32x32: a red square at rows/cols 4-11 (cells 1-2) and a green one at rows 20-27, cols 16-27."""
    x = torch.zeros(n, 3, 32, 32)
    x[:, 0, 4:12, 4:12] = 1.0
    x[:, 1, 20:28, 16:28] = 1.0
    red = torch.tensor([[4.0, 4.0, 12.0, 12.0]])
    green = torch.tensor([[16.0, 20.0, 28.0, 28.0]])
    return x, boxes_to_mask(red, 32, 32), boxes_to_mask(green, 32, 32)


def test_exact_cam_on_the_evidence_region_one_target_per_image():
    model = TwoSquares()
    x, red, green = _two_square_images(6)
    targets = torch.tensor([0, 1, 0, 1, 1, 0])
    out = C.compute_cams(model, x, targets, batch_size=4)
    assert out.layer.name == "features"
    assert out.cams.shape == (6, 32, 32)
    regions = torch.stack([red if t == 0 else green for t in targets])
    s = localisation_scores(out.cams, regions, threshold=0.5)
    # the CAM is the stride-4 indicator of the target's square, bilinearly upsampled (half-pixel centres)
    cells = torch.nn.functional.avg_pool2d(regions[:, None].float(), 4)
    expected = torch.nn.functional.interpolate(cells, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.cams, expected, atol=1e-6, rtol=0)
    # so CAM >= 0.5 is the square minus its 4 corner pixels (0.625^2 < 0.5): red 60/64, green 92/96
    np.testing.assert_allclose(s.precision.numpy(), 1.0)
    np.testing.assert_allclose(s.recall.numpy(), [60 / 64 if t == 0 else 92 / 96 for t in targets])
    inside = (expected * regions).sum((1, 2)) / expected.sum((1, 2))  # the bilinear rim lies outside
    np.testing.assert_allclose(s.energy.numpy(), inside.numpy(), atol=1e-6)
    # the other colour's square gets nothing
    other = torch.stack([green if t == 0 else red for t in targets])
    assert float((out.cams * other).max()) == 0.0
    # predicted-class mode: the green square is larger, so every image is predicted as class 1
    pred = C.compute_cams(model, x, None)
    assert pred.targets.tolist() == [1] * 6
    torch.testing.assert_close(pred.cams, expected[1:2].expand(6, 32, 32), atol=1e-6, rtol=0)


def _resnet(seed=0):
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=7).eval()


def _offered_methods():
    from repanalysis.cli.gradcam import METHOD_CHOICES

    return list(METHOD_CHOICES)


def _pytorch_grad_cam(method, model, layer, x, y, reshape_transform=None):
    """pytorch-grad-cam used directly, with its own class for ``method`` and one ClassifierOutputTarget per
    image. Its output is what ours promises: ReLU of the layer's CAM, min-max scaled per image (x - min, then
    / (max + 1e-7)), resized to the input with cv2's bilinear, and min-max scaled again."""
    import pytorch_grad_cam as P
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": P.GradCAM, "gradcam++": P.GradCAMPlusPlus, "xgradcam": P.XGradCAM, "eigencam": P.EigenCAM,
           "layercam": P.LayerCAM, "hirescam": P.HiResCAM, "gradcam-elementwise": P.GradCAMElementWise,
           "eigengradcam": P.EigenGradCAM, "scorecam": P.ScoreCAM, "ablationcam": P.AblationCAM,
           "fullgrad": P.FullGrad, "kpcacam": P.KPCA_CAM, "fem": P.FEM, "shapleycam": P.ShapleyCAM,
           "randomcam": P.RandomCAM}[method]
    layers = [] if method == "fullgrad" else [layer]   # FullGrad: every bias layer, no target layer
    np.random.seed(0)                                  # RandomCAM draws from numpy's global generator
    extra = {}
    if method == "ablationcam" and reshape_transform is not None:      # pytorch-grad-cam's README for ViTs
        from pytorch_grad_cam.ablation_layer import AblationLayerVit

        extra["ablation_layer"] = AblationLayerVit()
    with cls(model=model, target_layers=layers, reshape_transform=reshape_transform, **extra) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in y])


def _ours(method, model, x, y, **kwargs):
    np.random.seed(0)
    return C.compute_cams(model, x, y, method=method, **kwargs)


_SLOW = ("scorecam", "ablationcam")         # one forward pass per channel of layer4 (512) per image
_CLASS_AGNOSTIC = ("eigencam", "kpcacam", "fem", "randomcam")


def _check_scaled_per_image(cams: np.ndarray) -> None:
    """Each CAM min-max scaled: min 0, max 1 (not a constant map, so the comparison means something)."""
    flat = cams.reshape(len(cams), -1)
    np.testing.assert_allclose(flat.min(1), 0.0, atol=1e-7)
    np.testing.assert_allclose(flat.max(1), 1.0, atol=1e-6)


def test_the_offered_methods_are_the_library_methods():
    assert _offered_methods() == list(C.METHODS)


@pytest.mark.parametrize("method", _offered_methods())
def test_batched_equals_pytorch_grad_cam_one_image_at_a_time(method):
    model = _resnet()
    n = 2 if method in _SLOW else 5
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))[:n]
    y = torch.tensor([0, 3, 5, 2, 3])[:n]     # (class 6's Grad-CAM is all zero at this seed: nothing to compare)
    ours = _ours(method, model, x, y, batch_size=3)
    assert ours.layer.name == ("all-biases" if method == "fullgrad" else "layer4")
    assert ours.targets.tolist() == y.tolist()
    if method != "randomcam":      # (random: one draw per call, so per image differs from per batch)
        ref = []
        for i in range(n):  # as pytorch-grad-cam's README does it: full model, one image, one target
            ref.append(_pytorch_grad_cam(method, model, model.layer4, x[i:i + 1], y[i:i + 1]))
        ref = np.concatenate(ref)
        # (AblationCAM at this seed: image 1's map for class 3 is all zero; image 0's is a real one)
        # (FEM keeps channels above mean + 2 std over the 2x2 layer4 grid: none here, so its map is all zero)
        if method != "fem":
            _check_scaled_per_image(ref[:1] if method == "ablationcam" else ref)
        # (AblationCAM's weights are differences of near-equal scores: per image vs per batch drift ~1e-4)
        np.testing.assert_allclose(ours.cams.numpy(), ref, atol=2e-4 if method == "ablationcam" else 2e-5, rtol=0)
    # and pytorch-grad-cam on the same batch at once: the same numbers (no batching / graph-cut drift)
    whole = _ours(method, model, x, y, batch_size=5)
    np.testing.assert_allclose(whole.cams.numpy(), _pytorch_grad_cam(method, model, model.layer4, x, y),
                               atol=1e-6, rtol=0)
    if method not in _CLASS_AGNOSTIC:       # class-specific: another target gives another map
        other = _ours(method, model, x, (y + 1) % 6)
        assert np.abs(other.cams.numpy() - ours.cams.numpy()).max() > (0.02 if method in _SLOW else 0.05)
    with torch.no_grad():
        np.testing.assert_allclose(ours.logits.numpy(), model(x).numpy(), atol=1e-4)


def test_hooks_released_and_parameters_restored():
    model = _resnet()
    model.fc.weight.requires_grad_(False)  # a user's own freezing must survive
    flags = [p.requires_grad for p in model.parameters()]
    C.compute_cams(model, torch.randn(2, 3, 32, 32), [1, 2])
    with pytest.raises(DataError):
        C.compute_cams(model, torch.randn(2, 3, 32, 32), [1, 99])  # class out of range
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_target_layers_per_family():
    import timm
    import torchvision

    assert C.resolve_cam_layer(_resnet()).name == "layer4"
    assert C.resolve_cam_layer(timm.create_model("tf_efficientnet_lite0", pretrained=False)).name == "bn2"
    assert C.resolve_cam_layer(torchvision.models.vgg11(num_classes=3)).name == "features"
    # distilled DeiT on 64x64 inputs: two prefix tokens, grid 4x4 from the model, not 14x14
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=64, num_classes=4,
                             depth=2).eval()
    layer = C.resolve_cam_layer(deit)
    assert layer.name == "blocks.1.norm1"
    assert layer.reshape_transform.prefix == 2 and layer.reshape_transform.grid == (4, 4)
    # (their CAM values: test_vit_cams_equal_pytorch_grad_cam_with_a_reshape_written_here)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=3).eval()
    layer = C.resolve_cam_layer(vit)
    assert layer.name == "encoder.layers.1.ln_1" and layer.reshape_transform.grid == (4, 4)


def _tokens_to_grid(prefix: int, side: int):
    """pytorch-grad-cam's ViT reshape_transform (its tutorial's), written here independently of ours: drop the
    ``prefix`` leading tokens (CLS, distillation, registers), reshape the rest to side x side, channels first."""
    def reshape_transform(tensor):
        result = tensor[:, prefix:, :].reshape(tensor.size(0), side, side, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


def _vit(kind: str):
    """(random-weight ViT on 32x32 inputs with 8x8 patches (a 4x4 grid), its last block's first norm, the
    number of tokens before the patches)."""
    import timm
    import torchvision

    torch.manual_seed(0)
    small = dict(pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=5)
    if kind == "deit-distilled":       # CLS + distillation token
        model = timm.create_model("deit_tiny_distilled_patch16_224", **small)
        return model.eval(), model.blocks[-1].norm1, 2
    if kind == "vit":                  # CLS token
        model = timm.create_model("vit_tiny_patch16_224", **small)
        return model.eval(), model.blocks[-1].norm1, 1
    if kind == "vit-registers":        # CLS + 4 register tokens
        model = timm.create_model("vit_tiny_patch16_224", reg_tokens=4, **small)
        return model.eval(), model.blocks[-1].norm1, 5
    if kind == "vit-no-cls":           # average-pooled patch tokens, no prefix at all
        model = timm.create_model("vit_tiny_patch16_224", class_token=False, global_pool="avg", **small)
        return model.eval(), model.blocks[-1].norm1, 0
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=5)
    nn.init.normal_(model.heads.head.weight)     # torchvision starts the head at zero: every gradient 0
    return model.eval(), model.encoder.layers[-1].ln_1, 1


def test_fullgrad_refuses_a_token_model_in_one_line():
    model, _, _ = _vit("vit")
    with pytest.raises(DataError, match="fullgrad works on convolutional networks only"):
        C.compute_cams(model, torch.randn(1, 3, 32, 32), torch.tensor([1]), method="fullgrad")


@pytest.mark.parametrize("method", [m for m in _offered_methods() if m != "fullgrad"])
@pytest.mark.parametrize("kind", ["deit-distilled", "vit", "vit-registers", "vit-no-cls", "torchvision-vit"])
def test_vit_cams_equal_pytorch_grad_cam_with_a_reshape_written_here(kind, method):
    model, layer, prefix = _vit(kind)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([1, 4, 2])
    ours = C.compute_cams(model, x, y, method=method)        # layer and token grid found by our rules
    assert ours.layer.module is layer and ours.cams.shape == (3, 32, 32)
    ref = _pytorch_grad_cam(method, model, layer, x, y, reshape_transform=_tokens_to_grid(prefix, 4))
    _check_scaled_per_image(ref)
    # float32 rounding only: the gradient reaches the layer by another order of operations when the layers
    # below are cut off (xgradcam divides by the activations' sum, which is small after a LayerNorm: up to 4e-6
    # here; the two agree exactly in float64)
    np.testing.assert_allclose(ours.cams.numpy(), ref, atol=1e-5, rtol=0)
    if prefix:   # the comparison can tell grids apart: one prefix token kept (and the last patch dropped) differs
        shifted = _pytorch_grad_cam(method, model, layer, x, y, reshape_transform=_shifted_grid(prefix, 4))
        assert np.abs(shifted - ref).max() > 0.05


def _shifted_grid(prefix: int, side: int):
    """The grid of a reshape that drops one token too few: every patch moved by one position."""
    def reshape_transform(tensor):
        result = tensor[:, prefix - 1:-1, :].reshape(tensor.size(0), side, side, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return reshape_transform


class _DenseNetOutOfPlace(nn.Module):
    """torchvision DenseNet's forward with its ``F.relu(features, inplace=True)`` made out of place: the same
    function and the same modules (weights), so its CAMs of ``features`` are what the DenseNet's should be."""

    def __init__(self, densenet):
        super().__init__()
        self.net = densenet

    def forward(self, x):
        out = torch.relu(self.net.features(x))
        return self.net.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


# The CPU pitfall shows in the methods that weight the kept activation by a per-channel number; the methods
# weighting each pixel by its own gradient are immune like LayerCAM, and the perturbation ones (Score-CAM, FEM,
# RandomCAM) give flat maps on this tiny DenseNet: nothing to tell apart.
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "eigencam", "layercam"])
def test_an_inplace_op_after_the_layer_does_not_change_its_cam(method):
    # pytorch-grad-cam keeps the layer's output as `output.cpu().detach()`: a copy on a GPU, the same memory on
    # the CPU, so DenseNet's in-place ReLU after `features` rewrote the kept activation on the CPU only (the
    # gradient is still taken before the ReLU). Ours is the CAM of the layer's output on every device.
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=8, bn_size=2,
                                      num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 2, 4])
    ours = C.compute_cams(net, x, y, method=method)
    assert ours.layer.name == "features"
    ref = _pytorch_grad_cam(method, _DenseNetOutOfPlace(net), net.features, x, y)
    _check_scaled_per_image(ref)
    np.testing.assert_allclose(ours.cams.numpy(), ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        np.testing.assert_allclose(ours.logits.numpy(), net(x).numpy(), atol=1e-5)
    if method != "layercam":
        # the CPU pitfall itself (LayerCAM is immune: it weights each pixel by its own gradient, 0 where the
        # ReLU cut the activation, so the ReLU'd and the raw activation give the same map)
        direct = _pytorch_grad_cam(method, net, net.features, x, y)
        assert np.abs(direct - ref).max() > 0.05


def test_token_grid_drops_prefix_tokens_in_order():
    tokens = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)  # 2 prefix + 2x3 grid
    fmap = C.TokenGrid(2, (2, 3))(tokens)
    assert fmap.shape == (2, 3, 2, 3)
    # patch (row 1, col 2) is token 2 + 1 * 3 + 2 = 7
    torch.testing.assert_close(fmap[:, :, 1, 2], tokens[:, 7, :])
    with pytest.raises(ConfigError, match="expected a 3x3 grid"):
        C.TokenGrid(2, (3, 3))(tokens)


def test_layer_override_and_misses():
    model = _resnet()
    assert C.resolve_cam_layer(model, "layer3").module is model.layer3
    out = C.compute_cams(model, torch.randn(2, 3, 64, 64), [0, 1], layer="layer3.1")
    assert out.layer.name == "layer3.1"
    with pytest.raises(ConfigError, match="layer 'layer5' not found.*candidates: .*layer"):
        C.resolve_cam_layer(model, "layer5")
    # a name with no close match: the candidates are layers that give feature maps, not fc / avgpool
    with pytest.raises(ConfigError, match=r"layer 'nosuch' not found in ResNet; candidates: layer4, ") as err:
        C.resolve_cam_layer(model, "nosuch", example=torch.zeros(1, 3, 64, 64))
    assert "fc" not in str(err.value).split("candidates: ")[1].split(", ")
    assert "avgpool" not in str(err.value)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ConfigError, match="cannot find a CAM layer automatically"):
        C.resolve_cam_layer(mlp, example=torch.zeros(1, 3, 2, 2))
    with pytest.raises(DataError, match="unknown CAM method 'scorecam2'; expected one of gradcam, gradcam\\+\\+, ") as err:
        C.compute_cams(model, torch.randn(1, 3, 32, 32), [0], method="scorecam2")
    assert "\n" not in str(err.value) and all(m in str(err.value) for m in C.METHODS)
    with pytest.raises(DataError, match="one target per image"):
        C.compute_cams(model, torch.randn(2, 3, 32, 32), [0])


class _SquaresDataset(torch.utils.data.Dataset):
    """Array images (uint8 RGB) with the ImageDataset interface: (tensor, label, index), samples, load_image."""

    def __init__(self, n):
        from repanalysis.data.transforms import EvalTransform

        x, _, _ = _two_square_images(n)
        self.pixels = (x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        self.labels = [i % 2 for i in range(n)]
        self.samples = [f"img_{i}.png" for i in range(n)]
        self.transform = EvalTransform(resolution=None, mean=(0.0,) * 3, std=(1.0,) * 3)

    def __len__(self):
        return len(self.samples)

    def load_image(self, i):
        from PIL import Image

        return Image.fromarray(self.pixels[i])

    def __getitem__(self, i):
        return self.transform(self.load_image(i)), self.labels[i], i


def test_localise_dataset_streams_batches_and_skips_images_without_boxes():
    from repanalysis.data.boxes import BoxRegions

    ds = _SquaresDataset(7)
    red, green = (None, 4, 4, 12, 12), (None, 16, 20, 28, 28)
    boxes = {f"img_{i}": [red if i % 2 == 0 else green] for i in range(7) if i != 3}
    regions = BoxRegions(boxes, ds.transform)
    res = C.localise_dataset(TwoSquares(), ds, regions, ds.transform, batch_size=4, keep=3, name="sq")
    assert res.skipped == ["img_3.png"] and res.num_images == 6
    assert res.sample_names == [f"img_{i}.png" for i in (0, 1, 2, 4, 5, 6)]
    np.testing.assert_array_equal(res.targets, res.labels)
    np.testing.assert_allclose(res.precision, 1.0)
    np.testing.assert_allclose(res.recall, [60 / 64 if i % 2 == 0 else 92 / 96 for i in (0, 1, 2, 4, 5, 6)])
    assert [e.name for e in res.examples] == ["img_0.png", "img_1.png", "img_2.png"]
    assert res.examples[1].image.shape == (32, 32, 3) and res.examples[1].boxes.tolist() == [[16, 20, 28, 28]]
    summary = res.summary()
    assert summary["skipped"] == 1 and summary["precision"] == pytest.approx(1.0)
    # mean PR curve: at tau = 0 the mask is the whole image, so precision = mean box share
    assert res.pr_precision[0] == pytest.approx(np.mean(res.region_fraction))
    with pytest.raises(DataError, match="1 of 7 images have no box"):
        C.localise_dataset(TwoSquares(), ds, regions, ds.transform, strict=True)
    pred = C.localise_dataset(TwoSquares(), ds, regions, ds.transform, target="pred", limit=3)
    assert pred.targets.tolist() == [1, 1, 1] and pred.num_images == 3


def _tiny_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).eval()


@pytest.mark.parametrize("targets, message", [
    ([-1], "targets must be class indices >= 0; found -1"),       # was silently class 4, reported as -1
    ([2.9], "targets must be integer class indices; got non-integer values"),  # was silently class 2
    ([0, 1], "need one target per image: 1 images, 2 targets"),
])
def test_targets_must_be_class_indices(targets, message):
    with pytest.raises(DataError, match=message):
        C.compute_cams(_tiny_cnn(), torch.randn(1, 3, 8, 8), targets)
    with pytest.raises(DataError, match=message), C.CamEngine(_tiny_cnn()) as engine:
        engine(torch.randn(1, 3, 8, 8), targets)


def test_images_as_numpy_or_other_float_dtypes_give_the_same_cams():
    model, x = _tiny_cnn(), torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = C.compute_cams(model, x, [0, 2, 4])
    for images, tol in ((x.numpy(), 0), (x.tolist(), 0), (x.double(), 1e-6), (x.half(), 5e-2)):
        out = C.compute_cams(model, images, np.array([0, 2, 4]))  # AttributeError / dtype RuntimeError before
        assert out.cams.dtype == torch.float32 and out.targets.tolist() == [0, 2, 4]
        torch.testing.assert_close(out.cams, ref.cams, atol=tol, rtol=0)
    assert C.compute_cams(model, x, [0.0, 2.0, 4.0]).targets.tolist() == [0, 2, 4]


@pytest.mark.parametrize("images, message", [
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "images must be normalised float tensors, as produced by the "
                                                 "model's transform; got uint8 pixels"),
    (torch.randn(2, 1, 8, 8), r"images have 1 channels but the model's first convolution expects 3; expected "
                              r"images \[N, 3, H, W\]"),
    (torch.randn(0, 3, 8, 8), r"no images: expected a batch \[N, C, H, W\] with N >= 1"),
    (torch.randn(3, 8, 8), r"images must be a batch \[N, C, H, W\]; got shape \(3, 8, 8\)"),  # not "3 images"
])
def test_bad_images_raise_one_line_data_errors(images, message):
    model = _tiny_cnn()
    targets = [1] * images.shape[0] if images.ndim == 4 else [1]
    with pytest.raises(DataError, match=message) as err:
        C.compute_cams(model, images, targets)
    assert "\n" not in str(err.value)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_forward_failures_other_than_channels_are_one_line_data_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    with pytest.raises(DataError, match=r"the model failed on images of shape \(1, 3, 3, 3\): .*[Kk]ernel size") as e:
        C.compute_cams(model, torch.randn(1, 3, 3, 3), [0], layer="0")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
    ({"batch_size": -1}, "batch_size must be an integer >= 1; got -1"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1; got 2.5"),
    ({"device": "gpu"}, "unknown device 'gpu'; expected auto, cpu, cuda or cuda:N"),
    pytest.param({"device": "cuda"}, "no CUDA device is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")),
])
def test_bad_options_raise_data_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        C.compute_cams(_tiny_cnn(), torch.randn(2, 3, 8, 8), [0, 1], **kwargs)


def test_engine_outside_its_with_block_is_a_repanalysis_error():
    from repanalysis.errors import RepanalysisError

    engine = C.CamEngine(_tiny_cnn())
    with pytest.raises(RepanalysisError, match="outside its `with` block"):
        engine(torch.randn(1, 3, 8, 8), [0])
    with engine:
        assert engine(torch.randn(1, 3, 8, 8), [0]).cams.shape == (1, 8, 8)
    with pytest.raises(RepanalysisError, match="outside its `with` block"):
        engine(torch.randn(1, 3, 8, 8), [0])


def test_cam_runs_leave_each_modules_train_or_eval_mode_as_it_was():
    # a model in train mode with one BatchNorm frozen in eval: CAMs are computed in eval mode, and every
    # module's own mode comes back afterwards (constructing an engine alone changes nothing)
    import torchvision.models as tvm

    from repanalysis.analyze.cam import CamEngine, compute_cams

    torch.manual_seed(0)
    model = tvm.resnet18(num_classes=4).train()
    model.layer1[0].bn1.eval()
    before = {name: m.training for name, m in model.named_modules()}
    stats = model.bn1.running_mean.clone()
    CamEngine(model, example=torch.rand(1, 3, 64, 64))
    assert {name: m.training for name, m in model.named_modules()} == before
    images = torch.rand(2, 3, 64, 64)
    out = compute_cams(model, images, targets=[0, 1])
    assert {name: m.training for name, m in model.named_modules()} == before
    assert torch.equal(model.bn1.running_mean, stats)              # no train-mode forward pass updated BN
    torch.testing.assert_close(out.cams, compute_cams(model.eval(), images, targets=[0, 1]).cams)   # eval-mode CAMs
