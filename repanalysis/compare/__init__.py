"""Compare models in one call: every analysis on the same images, paired differences against a baseline, tables,
figures and a self-contained HTML report (``repanalysis compare``).

Three lines in a notebook::

    from repanalysis.compare import compare
    res = compare(["ce.pth", "ls.pth", "maxsup.pth"], names="CE,LS,MaxSup", data="val/", out="runs/compare")
    res.to_frame()          # every metric of every analysis, one tidy frame; res.report is the HTML page

This floor sits above report and plot (it composes both) and below the demo, which ends by writing its report.
"""
from repanalysis.compare.run import CompareResult, compare

__all__ = ["CompareResult", "compare"]
