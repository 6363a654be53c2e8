"""Training losses written on logits (REFERENCE.md "Logit analyses").

Each loss is ``loss(logits [B, K], labels [B], progress in [0, 1]) -> scalar``; ``progress`` drives
schedules: by default the alpha of both label smoothing and MaxSup rises linearly 0.1 -> 0.2 over training, as
in the MaxSup paper (Sec. 5.1.1, App. F, Table 8); ``alpha_schedule="constant"`` keeps alpha at ``alpha_start``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch.nn.functional as F


@dataclass(frozen=True)
class CrossEntropy:
    name: str = "ce"

    def __call__(self, logits, labels, progress: float = 0.0):
        return F.cross_entropy(logits, labels)


SCHEDULES = ("linear", "constant")


@dataclass(frozen=True)
class _ScheduledAlpha:
    """alpha(progress): linear from alpha_start (progress 0) to alpha_end (progress 1), or alpha_start throughout
    with ``alpha_schedule="constant"``."""

    alpha_start: float = 0.1
    alpha_end: float = 0.2
    alpha_schedule: str = "linear"

    def alpha(self, progress: float) -> float:
        if self.alpha_schedule == "constant":
            return self.alpha_start
        return self.alpha_start + (self.alpha_end - self.alpha_start) * min(max(progress, 0.0), 1.0)


@dataclass(frozen=True)
class LabelSmoothing(_ScheduledAlpha):
    """CE with smoothing alpha(progress); equals CE + alpha * (z_y - mean_k z_k) (MaxSup Theorem 3.3).
    alpha linear 0.1 -> 0.2 by default (MaxSup Sec. 5.1.1, App. F), or constant."""

    name: str = "ls"

    def __call__(self, logits, labels, progress: float = 0.0):
        return F.cross_entropy(logits, labels, label_smoothing=self.alpha(progress))


@dataclass(frozen=True)
class MaxSup(_ScheduledAlpha):
    """CE + alpha * (z_max - mean_k z_k) (MaxSup Eq. 8), alpha linear from alpha_start to alpha_end (or constant)."""

    name: str = "maxsup"

    def __call__(self, logits, labels, progress: float = 0.0):
        penalty = logits.max(dim=1).values - logits.mean(dim=1)
        return F.cross_entropy(logits, labels) + self.alpha(progress) * penalty.mean()


@dataclass(frozen=True)
class LogitPenalty:
    """CE + beta * sum_k z_k^2 / 2 (Dauphin & Cubuk), beta = 2e-3."""

    beta: float = 2e-3
    name: str = "logit_penalty"

    def __call__(self, logits, labels, progress: float = 0.0):
        return F.cross_entropy(logits, labels) + self.beta * 0.5 * (logits ** 2).sum(dim=1).mean()


LOSSES = {"ce": CrossEntropy, "ls": LabelSmoothing, "maxsup": MaxSup, "logit_penalty": LogitPenalty}


# bounds of each loss's options (all are finite real numbers)
OPTION_BOUNDS = {("ls", "alpha"): {"minimum": 0, "maximum": 1}, ("ls", "alpha_start"): {"minimum": 0, "maximum": 1},
                 ("ls", "alpha_end"): {"minimum": 0, "maximum": 1}, ("logit_penalty", "beta"): {"minimum": 0}}


def make_loss(name: str, /, **kwargs):
    """Loss by name: ce, ls, maxsup, logit_penalty; ``kwargs`` are its options.

    ls and maxsup: ``alpha_start`` / ``alpha_end`` (default 0.1 / 0.2) and ``alpha_schedule`` ("linear", the
    default: alpha rises linearly from alpha_start to alpha_end over training, as in the MaxSup paper; or
    "constant": alpha_start throughout), or ``alpha`` alone, shorthand for a constant alpha. logit_penalty:
    ``beta``. DataError for an unknown name, an option the loss does not take, ``alpha`` combined with the
    schedule options, an unknown schedule, or a value that is not a finite number in range (ls alphas in [0, 1],
    beta >= 0).

    >>> make_loss("ls").alpha(1.0), make_loss("ls", alpha_schedule="constant").alpha(1.0)
    (0.2, 0.1)
    """
    from repanalysis.arrays import check_number
    from repanalysis.errors import DataError

    key = name.lower().replace("-", "_") if isinstance(name, str) else None
    if key not in LOSSES:
        raise DataError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    options = [f.name for f in fields(LOSSES[key]) if f.name != "name"]
    scheduled = "alpha_schedule" in options
    if scheduled:
        options.insert(0, "alpha")          # shorthand for a constant alpha
    for option in kwargs:
        if option not in options:
            if not options:
                raise DataError(f"loss {key!r} takes no options; got {option!r}")
            raise DataError(f"loss {key!r} takes no option {option!r}; expected {', '.join(options)}")
    kwargs = dict(kwargs)
    if scheduled and "alpha" in kwargs:
        clash = [o for o in ("alpha_start", "alpha_end", "alpha_schedule") if o in kwargs]
        if clash:
            raise DataError(f"{key} loss option alpha (a constant alpha) cannot be combined with {clash[0]}; "
                            "expected alpha alone, or alpha_start / alpha_end / alpha_schedule")
    schedule = kwargs.pop("alpha_schedule", None)
    if schedule is not None and (not isinstance(schedule, str) or schedule not in SCHEDULES):
        raise DataError(f"{key} loss option alpha_schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    kwargs = {option: check_number(value, f"{key} loss option {option}", **OPTION_BOUNDS.get((key, option), {}))
              for option, value in kwargs.items()}
    if "alpha" in kwargs:
        alpha = kwargs.pop("alpha")
        kwargs.update(alpha_start=alpha, alpha_end=alpha, alpha_schedule="constant")
    elif schedule is not None:
        kwargs["alpha_schedule"] = schedule
    return LOSSES[key](**kwargs)
