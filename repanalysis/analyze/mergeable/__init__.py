"""Mergeable analyses over shards: small sufficient statistics per shard that add up to the whole run's numbers.

A large extraction (ImageNet train, 1.28M x 2048 features) may be split into shards (``repanalysis extract
--shard i/n``, or the ranks of a ``torchrun`` run): each is an ordinary complete Dump of a contiguous row range,
its ``meta.json`` naming the range (:mod:`repanalysis.dump.shards`). The analyses below have sufficient
statistics that are sums, so each machine computes the statistics of its own shard (kilobytes to a few MB:
K x D for the features, K x M for the classwise bins, K x K for the confusion counts), and the statistics of
all shards combine to the numbers the analysis gives on the merged Dump, up to float rounding (the sums are
float64 and only their order differs):

- **separation** (:class:`~repanalysis.analyze.geometry.SeparationAccumulator`): per-class sums of unit-normalised
  features and counts -> d_within, d_total, R^2, per-class d_within (a
  :class:`~repanalysis.analyze.geometry.SeparationResult`, by the same closed form). Only when the Dumps hold
  features.
- **calibration** (the per-sample pass ``_scan`` of :mod:`repanalysis.analyze.calibration`): the M equal-width
  bins' counts / confidence sums / accuracy sums, the classwise cells (K x M counts, p sums, hits), the NLL and
  Brier sums -> accuracy, mean confidence, ECE, MCE, O-ECE, U-ECE, classwise ECE, NLL, Brier and the
  equal-width bins. **Not mergeable, left out:** the adaptive (equal-mass) ECE and AUROC need the sorted
  per-sample confidences of every row, and bootstrap intervals need the per-sample values.
- **logit statistics** (``_chunk_stats`` of :mod:`repanalysis.analyze.logits`): for each of ``PER_SAMPLE_STATS``
  the count, float64 sum, sum of squared deviations (merged by Chan et al.'s pairwise update, stabler than a raw
  sum of squares), min and max -> mean, std (ddof 0), min, max; accuracy; the error-enhancement active count
  and the sums behind ``ee_mean_active`` and ``ee_loss_share``. **Not mergeable, left out:** quantiles,
  medians and the KDE of the logits (they need every value).
- **confusion counts**: K x K int64 (rows the true label, columns the prediction argmax z, first index on ties)
  -> overall and per-class accuracy and the top confusions of each class.

Rows with NaN/inf logits are excluded as each analysis does on a whole Dump: calibration drops rows with a NaN or
+inf logit or -inf at the label; the logit statistics and the confusion counts drop rows with any non-finite
logit; separation drops feature rows of zero norm or with NaN/inf.

Usage, per machine then anywhere (the command line's ``repanalysis shard-stats`` does the same)::

    from repanalysis.analyze.mergeable import shard_statistics, load_statistics, merge_statistics
    shard_statistics("runs/r50/train-shard-0").save("stats-0.npz")       # on the machine holding shard 0
    ...
    merged = merge_statistics([load_statistics(f"stats-{i}.npz") for i in range(8)])   # checks the cover
    res = merged.compute()          # MergedAnalyses: .separation, .calibration, .logits, .confusion
    res.separation.r2, res.calibration.ece, res.logits.mean("top1_prob"), res.confusion.accuracy
    res.to_frame()                  # tidy: model, analysis, metric, value, n

    $ repanalysis shard-stats --shards shard-0 --save stats-0.npz          # per machine
    $ repanalysis shard-stats --shards stats-*.npz --out results           # combine: tables + shard_stats.json

:func:`merge_statistics` refuses shards of different runs, gaps and overlaps (naming the rows:
:func:`repanalysis.dump.shards.check_cover`), and statistics made with different bins, threshold or alpha.
"""
from __future__ import annotations

from repanalysis.analyze.mergeable.results import (CALIBRATION_SCALARS, MergedAnalyses, MergedCalibration,
                                                  MergedConfusion, MergedLogitStats)
from repanalysis.analyze.mergeable.statistics import (DEFAULT_CHUNK, FORMAT, VERSION, ShardStatistics, analyse_shards,
                                                     load_statistics, merge_statistics, shard_statistics,
                                                     statistics_of)
from repanalysis.analyze.mergeable.sums import CalibrationSums, LogitSums

__all__ = ["CALIBRATION_SCALARS", "DEFAULT_CHUNK", "FORMAT", "VERSION", "CalibrationSums", "LogitSums", "MergedAnalyses",
           "MergedCalibration", "MergedConfusion", "MergedLogitStats", "ShardStatistics", "analyse_shards",
           "load_statistics", "merge_statistics", "shard_statistics", "statistics_of"]
