"""Training losses written on logits (REFERENCE.md "Logit analyses").

Each loss is ``loss(logits [B, K], labels [B], progress in [0, 1]) -> scalar``; ``progress`` drives
schedules (MaxSup's alpha rises linearly 0.1 -> 0.2 over training).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch.nn.functional as F


@dataclass(frozen=True)
class CrossEntropy:
    name: str = "ce"

    def __call__(self, logits, labels, progress: float = 0.0):
        return F.cross_entropy(logits, labels)


@dataclass(frozen=True)
class LabelSmoothing:
    """CE with smoothing alpha; equals CE + alpha * (z_y - mean_k z_k) (MaxSup Theorem 3.3)."""

    alpha: float = 0.1
    name: str = "ls"

    def __call__(self, logits, labels, progress: float = 0.0):
        return F.cross_entropy(logits, labels, label_smoothing=self.alpha)


@dataclass(frozen=True)
class MaxSup:
    """CE + alpha * (z_max - mean_k z_k) (MaxSup Eq. 8), alpha linear from alpha_start to alpha_end."""

    alpha_start: float = 0.1
    alpha_end: float = 0.2
    name: str = "maxsup"

    def alpha(self, progress: float) -> float:
        return self.alpha_start + (self.alpha_end - self.alpha_start) * min(max(progress, 0.0), 1.0)

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
OPTION_BOUNDS = {("ls", "alpha"): {"minimum": 0, "maximum": 1}, ("logit_penalty", "beta"): {"minimum": 0}}


def make_loss(name: str, /, **kwargs):
    """Loss by name: ce, ls, maxsup, logit_penalty; ``kwargs`` are its options (``alpha`` of ls, ``alpha_start`` /
    ``alpha_end`` of maxsup, ``beta`` of logit_penalty). DataError for an unknown name, an option the loss does
    not take, or a value that is not a finite number in range (ls alpha in [0, 1], beta >= 0)."""
    from repanalysis.analyze._arrays import check_number
    from repanalysis.errors import DataError

    key = name.lower().replace("-", "_") if isinstance(name, str) else None
    if key not in LOSSES:
        raise DataError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    options = [f.name for f in fields(LOSSES[key]) if f.name != "name"]
    for option in kwargs:
        if option not in options:
            if not options:
                raise DataError(f"loss {key!r} takes no options; got {option!r}")
            raise DataError(f"loss {key!r} takes no option {option!r}; expected {', '.join(options)}")
    kwargs = {option: check_number(value, f"{key} loss option {option}", **OPTION_BOUNDS.get((key, option), {}))
              for option, value in kwargs.items()}
    return LOSSES[key](**kwargs)
