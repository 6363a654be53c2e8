"""Temperature scaling (Guo et al. 2017): :func:`fit_temperature` on held-out logits, :func:`apply_temperature`."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from repanalysis.analyze.calibration._fused import _prepare
from repanalysis.analyze.calibration.results import TemperatureResult
from repanalysis.arrays import as_tensor, check_number
from repanalysis.errors import DataError


def apply_temperature(logits, temperature):
    """z / T (Guo et al. 2017, temperature scaling). ``temperature``: T > 0, or the result of
    :func:`fit_temperature`. Returns the same type as given (tensor or ndarray)."""
    if isinstance(temperature, TemperatureResult):
        temperature = temperature.temperature
    temperature = check_number(temperature, "temperature", minimum=0, above=True)
    if isinstance(logits, torch.Tensor):
        return logits / temperature
    return as_tensor(logits).numpy().astype(np.float64) / temperature   # as_tensor refuses non-numbers


def fit_temperature(logits, labels, *, init: float = 1.5, max_iter: int = 100, num_classes: int | None = None,
                    device=None) -> TemperatureResult:
    """Fit one T > 0 minimising the NLL of softmax(z / T) on held-out logits (Guo et al. 2017, sec. 4.2).

    LBFGS (strong Wolfe line search) on log T from T = ``init``, float64. logits (N, K), labels (N,).
    """
    init = check_number(init, "initial temperature", minimum=0, above=True)
    max_iter = check_number(max_iter, "max_iter", integer=True, minimum=1)
    z, y = _prepare(logits, labels, num_classes, device)
    finite = torch.isfinite(z).all(1)
    n_bad = int((~finite).sum())
    if n_bad:
        warnings.warn(f"{n_bad} of {z.shape[0]} samples have NaN or inf logits; they are excluded from the "
                      "temperature fit", RuntimeWarning, stacklevel=2)
        z, y = z[finite], y[finite]
        if z.shape[0] == 0:
            raise DataError("no finite logits rows to fit a temperature on")
    errorless = bool((z.argmax(1) == y).all())
    if errorless:
        warnings.warn(f"every one of the {z.shape[0]} validation predictions is right: the NLL keeps falling as "
                      "T -> 0 and has no minimum, so the fitted temperature only sharpens the model; fit it on a "
                      "split with errors", RuntimeWarning, stacklevel=2)
    elif z.shape[0] > 1 and bool((y == y[0]).all()):
        warnings.warn(f"every validation label is {int(y[0])}: a temperature fitted on a single class only "
                      "sharpens towards it and does not calibrate the model", RuntimeWarning, stacklevel=2)
    z = z.to(torch.float64)
    log_t = torch.tensor([math.log(init)], dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(z, y))
    opt.step(closure)
    with torch.no_grad():
        t = float(log_t.exp())
        after = float(torch.nn.functional.cross_entropy(z / t, y))
        grad = log_t.grad.abs().item() if log_t.grad is not None else float("nan")
    converged = bool(grad < 1e-5) and not errorless        # errorless: a vanishing gradient is no minimum
    if not converged and not errorless:
        warnings.warn(f"the temperature fit stopped after {max_iter} iteration(s) at T = {t:.4g} without reaching "
                      f"a minimum of the validation NLL (|d NLL / d log T| = {grad:.2g})", RuntimeWarning,
                      stacklevel=2)
    return TemperatureResult(temperature=t, nll_before=before, nll_after=after, num_samples=int(z.shape[0]),
                             converged=converged)
