"""The demo: real CE / LS / MaxSup checkpoints on real MNIST digits, Dumps, then every analysis.

``run_demo`` builds (or reuses) the checkpoints and Dumps, then runs each step module found in
``repanalysis.demo.steps`` in ``ORDER``. A step module defines ``ORDER`` (int), ``TITLE`` (str) and
``run(ctx: DemoContext) -> None``; adding an analysis to the demo means adding one such file.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from repanalysis.dump import Dump
from repanalysis.errors import DataError
from repanalysis.outputs import output_set


@dataclass
class DemoContext:
    """What the demo's steps get to work with.

    out: the demo's output folder (figures/demo); each step writes under ``out / <its topic>``.
    checkpoints: model name -> checkpoint path (CE, LS, MaxSup), all of architecture ``arch``.
    dumps: model name -> split ("train", "test") -> complete Dump with logits, features, labels,
        classifier weights and class names.
    data: split -> path of the data set (an .npz of images and labels) the Dumps came from.
    class_names: the data set's class names ("zero" ... "nine").
    classes: a triplet of class names for 3-class projections/embeddings.
    ood_data: path of an out-of-distribution .npz (real photo patches) for OOD analyses, if made.
    ood_dumps: model name -> Dump of the OOD data set.
    log: print function for the demo's console output.
    progress: progress bars (stderr, when it is a terminal) on the steps that take a while.
    """

    out: Path
    checkpoints: dict[str, Path]
    dumps: dict[str, dict[str, Dump]]
    data: dict[str, Path]
    class_names: list[str]
    classes: list[str] = field(default_factory=lambda: ["four", "seven", "nine"])
    arch: str = "small_cnn"
    ood_data: Path | None = None
    ood_dumps: dict[str, Dump] = field(default_factory=dict)
    device: str = "auto"
    log: Callable[[str], None] = print
    progress: bool = True

    @property
    def model_names(self) -> list[str]:
        return list(self.checkpoints)


def discover_steps() -> list:
    """Step modules in repanalysis.demo.steps, sorted by ORDER then name."""
    import repanalysis.demo.steps as pkg

    modules = [importlib.import_module(f"{pkg.__name__}.{info.name}")
               for info in pkgutil.iter_modules(pkg.__path__) if not info.name.startswith("_")]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def step_names() -> list[str]:
    """The demo's steps, in the order they run."""
    return [step.__name__.rsplit(".", 1)[-1] for step in discover_steps()]


def check_steps(only: list[str] | None) -> list[str] | None:
    """The step names asked for, checked against the demo's steps (DataError naming the valid ones)."""
    if not only:
        return None
    known = step_names()
    unknown = [name for name in only if name not in known]
    if unknown:
        raise DataError(f"unknown demo step(s) {', '.join(unknown)}; expected some of {', '.join(known)}")
    return only


def run_steps(ctx: DemoContext, only: list[str] | None = None) -> None:
    for step in discover_steps():
        short = step.__name__.rsplit(".", 1)[-1]
        if only and short not in only:
            continue
        ctx.log(f"\n== {getattr(step, 'TITLE', short)} ==")
        with output_set():          # a step's JSON, CSV and figures replace the last run's together, or none
            step.run(ctx)
