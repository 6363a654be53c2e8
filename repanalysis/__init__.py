"""repanalysis: what a training loss did to an image classifier.

Three lines in a notebook::

    import repanalysis as ra
    dump = ra.extract(ra.load_model("model.pth"), "path/to/data", "runs/model")
    print(dump.num_samples, dump.feature_dim)

Flow: load -> extract -> Dump -> analyze (pure functions on arrays) -> Result -> plot / report.
"""
from __future__ import annotations

import os as _os
import sys as _sys


def _interrupted_at_start(kind, value, tb, _default=_sys.excepthook):
    """The command line's Ctrl-C before its own handler is running (while torch is imported): one line."""
    if issubclass(kind, KeyboardInterrupt) and _os.environ.get("REPANALYSIS_DEBUG") != "1" \
            and "--debug" not in _sys.argv:
        from repanalysis.errors import INTERRUPTED      # a module without imports: safe this early

        _sys.stderr.write(f"error: {INTERRUPTED}\n")
        _sys.stderr.flush()
        _os._exit(130)
    _default(kind, value, tb)


def _is_the_command_line() -> bool:
    """This process is the `repanalysis` console script or `python -m repanalysis`, not a program importing it."""
    if _sys.argv and _os.path.basename(_sys.argv[0]) == "repanalysis":
        return True
    orig = list(getattr(_sys, "orig_argv", ()))
    return "-m" in orig[:-1] and orig[orig.index("-m") + 1] == "repanalysis"


# nothing of the command runs before this package's imports, which take a second or two
if _is_the_command_line():
    _sys.excepthook = _interrupted_at_start

from repanalysis import _compat  # noqa: E402

_compat.apply()  # must run before anything imports torchvision (a no-op where it loads normally)

from repanalysis._version import __version__  # noqa: E402

from repanalysis.errors import RepanalysisError  # noqa: E402
from repanalysis.dump import Dump, load_dump  # noqa: E402
# Bound explicitly: the name would otherwise resolve to the repanalysis.extract sub-package.
from repanalysis.extract.runner import extract  # noqa: E402

_LAZY = {
    "load_model": ("repanalysis.models.loading", "load_model"),
    "open_dataset": ("repanalysis.data.datasets", "open_dataset"),
    "merge_dumps": ("repanalysis.extract.merge", "merge_dumps"),
    "shard_statistics": ("repanalysis.analyze.mergeable", "shard_statistics"),
    "merge_statistics": ("repanalysis.analyze.mergeable", "merge_statistics"),
    "load_statistics": ("repanalysis.analyze.mergeable", "load_statistics"),
    "analyze": ("repanalysis.analyze", None),
    "plot": ("repanalysis.plot", None),
    "report": ("repanalysis.report", None),
    "train": ("repanalysis.train", None),
}


def __getattr__(name: str):
    # Heavy sub-packages (torchvision, timm, matplotlib) load on first use, keeping `import repanalysis` fast.
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'repanalysis' has no attribute {name!r}")


__all__ = ["Dump", "load_dump", "extract", "RepanalysisError", "__version__", *_LAZY]
