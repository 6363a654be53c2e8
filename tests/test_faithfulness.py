"""Average Drop / Increase in Confidence and ROAD equal pytorch-grad-cam's metrics called directly, and
Average Drop equals the Grad-CAM++ formula computed by hand."""
from __future__ import annotations

import numpy as np
import torch

import repanalysis  # noqa: F401
from repanalysis.analyze import cam as C
from repanalysis.analyze.faithfulness import faithfulness_scores


def test_faithfulness_equals_pytorch_grad_cam_and_the_paper_formula():
    import torchvision
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 5])
    cams = C.compute_cams(model, x, y).cams.numpy()
    torch.manual_seed(5)
    ours = faithfulness_scores(model, x, cams, y, percentiles=(20, 80))
    t = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    torch.manual_seed(5)
    change = CamMultImageConfidenceChange()(x, cams, t, model)
    morf = ROADMostRelevantFirstAverage([20, 80])(x, cams, t, model)
    lerf = ROADLeastRelevantFirstAverage([20, 80])(x, cams, t, model)
    comb = ROADCombined([20, 80])(x, cams, t, model)
    np.testing.assert_allclose(ours["road_morf"], morf, atol=1e-6)
    np.testing.assert_allclose(ours["road_lerf"], lerf, atol=1e-6)
    np.testing.assert_allclose(ours["road_combined"], comb, atol=1e-6)
    np.testing.assert_array_equal(ours["increase"], change > 0)
    with torch.no_grad():            # Grad-CAM++ sec. 6.1 by hand: max(0, y_c - o_c) / y_c * 100
        y_c = torch.softmax(model(x), 1)[torch.arange(3), y].numpy()
        o_c = torch.softmax(model(x * torch.from_numpy(cams)[:, None]), 1)[torch.arange(3), y].numpy()
    np.testing.assert_allclose(ours["avg_drop"], np.maximum(0, y_c - o_c) / y_c * 100, rtol=1e-4, atol=1e-4)


def test_gradcam_cli_faithfulness_and_box_accuracy_on_real_digits(real_checkpoints, real_data, tmp_path, capsys):
    """End to end: `repanalysis gradcam --faithfulness` on real digits with ink boxes; the per-image Average Drop
    equals the formula by hand on the same CAMs, and MaxBoxAcc is the best threshold's share of IoU >= 0.5."""
    import csv
    import json

    from _cli import run_cli
    from repanalysis.demo.steps.report import digit_box_file

    boxes = digit_box_file(real_data["test"], tmp_path, n=8)
    code, _, err = run_cli(["gradcam", "--checkpoint", str(real_checkpoints["CE"]), "--names", "CE", "--data",
                            str(real_data["test"]), "--boxes", str(boxes), "--limit", "8", "--faithfulness",
                            "--device", "cpu", "--workers", "0", "--quiet", "--out", str(tmp_path / "g")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "g" / "gradcam.json").read_text())["models"][0]["summary"]
    with open(tmp_path / "g" / "gradcam_per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    drops = np.array([float(r["avg_drop"]) for r in rows])
    assert summary["avg_drop"] == np.nanmean(drops) and 0 <= summary["avg_drop"] <= 100
    assert 0 <= summary["maxboxacc"] <= 1 and 0 <= summary["top1_loc"] <= summary["maxboxacc"]
    # Average Drop by hand on the CAMs of the same images
    import repanalysis as ra
    from repanalysis.analyze.cam import compute_cams

    lm = ra.load_model(real_checkpoints["CE"])
    ds = ra.open_dataset(real_data["test"], transform=lm.transform)
    x = torch.stack([ds[i][0] for i in range(8)])
    y = torch.tensor([int(ds[i][1]) for i in range(8)])
    cams = compute_cams(lm.model, x, y).cams
    with torch.no_grad():
        y_c = torch.softmax(lm.model(x), 1)[torch.arange(8), y].numpy()
        o_c = torch.softmax(lm.model(x * cams[:, None]), 1)[torch.arange(8), y].numpy()
    np.testing.assert_allclose(drops, np.maximum(0, y_c - o_c) / y_c * 100, rtol=1e-3, atol=1e-3)
