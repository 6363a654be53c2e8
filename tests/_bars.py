"""A stand-in for repanalysis.progress.progress_bar that records what each bar is asked to do."""
from __future__ import annotations


class RecordingBar:
    """One bar: ``total``, the keyword arguments it was made with (``kw``: desc, unit, enabled...), each
    ``update(n)`` in ``updates`` and their sum in ``n``."""

    def __init__(self, total=None, **kw):
        self.total, self.kw, self.updates = total, kw, []

    @property
    def n(self) -> int:
        return sum(self.updates)

    def update(self, n=1):
        self.updates.append(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def record_bars(monkeypatch, module, attr: str = "progress_bar") -> list[RecordingBar]:
    """Replace ``module.<attr>`` by a maker of RecordingBars; returns the list they are appended to."""
    bars: list[RecordingBar] = []

    def make(total=None, **kw):
        bars.append(RecordingBar(total, **kw))
        return bars[-1]

    monkeypatch.setattr(module, attr, make)
    return bars
