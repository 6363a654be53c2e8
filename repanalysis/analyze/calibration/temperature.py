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


def _finite_rows(z: torch.Tensor, y: torch.Tensor, fit: str, target: str):
    """(z, y) without the rows whose logits are NaN or inf, with one RuntimeWarning saying they are left out of
    the ``fit`` fit; DataError when no row is left (nothing to fit ``target`` on)."""
    finite = torch.isfinite(z).all(1)
    n_bad = int((~finite).sum())
    if n_bad:
        warnings.warn(f"{n_bad} of {z.shape[0]} samples have NaN or inf logits; they are excluded from the {fit} "
                      "fit", RuntimeWarning, stacklevel=3)
        z, y = z[finite], y[finite]
        if z.shape[0] == 0:
            raise DataError(f"no finite logits rows to fit {target} on")
    return z, y


def _minimise_nll(params: list, calibrate, z: torch.Tensor, y: torch.Tensor, max_iter: int,
                  tolerance_grad: float) -> tuple[float, float, float]:
    """L-BFGS (strong Wolfe line search) on the NLL of softmax(calibrate(z)) over ``params`` (float64 tensors that
    require grad, changed in place). Returns (NLL before, NLL after, the largest |gradient| at the end; NaN when a
    parameter got none)."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=tolerance_grad, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(calibrate(z), y)
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(z, y))
    opt.step(closure)
    with torch.no_grad():
        after = float(torch.nn.functional.cross_entropy(calibrate(z), y))
    grads = [p.grad for p in params]
    grad = float("nan") if any(g is None for g in grads) else max(float(g.abs().max()) for g in grads)
    return before, after, grad


def fit_temperature(logits, labels, *, init: float = 1.5, max_iter: int = 100, num_classes: int | None = None,
                    device=None) -> TemperatureResult:
    """Fit one T > 0 minimising the NLL of softmax(z / T) on held-out logits (Guo et al. 2017, sec. 4.2).

    LBFGS (strong Wolfe line search) on log T from T = ``init``, float64. logits (N, K), labels (N,).
    """
    init = check_number(init, "initial temperature", minimum=0, above=True)
    max_iter = check_number(max_iter, "max_iter", integer=True, minimum=1)
    z, y = _prepare(logits, labels, num_classes, device)
    z, y = _finite_rows(z, y, "temperature", "a temperature")
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
    before, after, grad = _minimise_nll([log_t], lambda v: v / log_t.exp(), z, y, max_iter, tolerance_grad=1e-10)
    t = float(log_t.exp())
    converged = bool(grad < 1e-5) and not errorless        # errorless: a vanishing gradient is no minimum
    if not converged and not errorless:
        warnings.warn(f"the temperature fit stopped after {max_iter} iteration(s) at T = {t:.4g} without reaching "
                      f"a minimum of the validation NLL (|d NLL / d log T| = {grad:.2g})", RuntimeWarning,
                      stacklevel=2)
    return TemperatureResult(temperature=t, nll_before=before, nll_after=after, num_samples=int(z.shape[0]),
                             converged=converged)
