"""Faithfulness of CAMs, with pytorch-grad-cam's metric implementations (not rewritten here).

- Average Drop / Increase in Confidence (Chattopadhay et al. 2018, Grad-CAM++, sec. 6.1): with y_c the
  softmax score of the target class on the image and o_c that on cam * image (the normalised input times the
  CAM), drop = max(0, y_c - o_c) / y_c * 100 per image (Average Drop = its mean; lower is better) and
  increase = [o_c > y_c] (Increase in Confidence = its mean; higher is better). Computed from
  ``CamMultImageConfidenceChange`` (o_c - y_c) with ``ClassifierOutputSoftmaxTarget``.
- ROAD (Rong et al. 2022): the target's softmax score after removing (noisy linear imputation) the most
  relevant pixels (MoRF; lower is better) or the least relevant (LeRF; higher is better), averaged over the
  percentiles 10..90, minus the score on the image; road_combined = (LeRF - MoRF) / 2 (higher is better).
  pytorch-grad-cam's ROADMostRelevantFirstAverage / ROADLeastRelevantFirstAverage / ROADCombined; the
  imputer adds noise from torch's global generator. Cost: 9 x 2 extra forward passes and sparse solves per
  image, so ``localise_dataset(faithfulness=True)`` is off by default.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FAITHFULNESS_METRICS = ("avg_drop", "increase", "road_morf", "road_lerf", "road_combined")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def faithfulness_scores(model: nn.Module, images: torch.Tensor, cams, targets,
                        percentiles=ROAD_PERCENTILES) -> dict[str, np.ndarray]:
    """Per-image faithfulness of CAMs [N, H, W] (in [0, 1], input resolution) for ``targets`` [N] on
    ``images`` [N, C, H, W] (normalised, on the model's device). Returns FAITHFULNESS_METRICS -> [N] float."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import (ROADCombined, ROADLeastRelevantFirstAverage,
                                               ROADMostRelevantFirstAverage)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    cams = np.ascontiguousarray(np.asarray(cams, dtype=np.float32))
    tlist = [ClassifierOutputSoftmaxTarget(int(t)) for t in torch.as_tensor(targets).reshape(-1).tolist()]
    with torch.no_grad():
        base = torch.softmax(model(images).float(), dim=1)
    y_c = base[torch.arange(len(tlist)), torch.as_tensor(targets).reshape(-1).long().to(base.device)]
    y_c = y_c.cpu().numpy().astype(np.float64)
    change = np.asarray(CamMultImageConfidenceChange()(images, cams, tlist, model), dtype=np.float64)  # o_c - y_c
    p = list(percentiles)
    morf = ROADMostRelevantFirstAverage(p)(images, cams, tlist, model)
    lerf = ROADLeastRelevantFirstAverage(p)(images, cams, tlist, model)
    combined = ROADCombined(p)(images, cams, tlist, model)
    # Grad-CAM++ sec. 6.1: Average Drop = mean of max(0, y_c - o_c) / y_c * 100
    drop = np.maximum(0.0, -change) / np.where(y_c > 0, y_c, np.nan) * 100
    return {"avg_drop": drop, "increase": (change > 0).astype(np.float64),
            "road_morf": np.asarray(morf, np.float64), "road_lerf": np.asarray(lerf, np.float64),
            "road_combined": np.asarray(combined, np.float64)}
