"""``compare``: several models on the same images, every analysis their inputs allow, paired differences against a
baseline, tables (Markdown, CSV, JSON), figures (PNG, PDF) and one self-contained ``report.html``."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from repanalysis.compare.parts import PARTS, Job, Part, check_finite_rows
from repanalysis.errors import DataError

MANIFEST = "compare.json"
# display scale and header of the paired-difference cells (fractions shown in % where the tables show %)
_SCALE = {("calibration", k): 100 for k in ("accuracy", "ece", "aece", "oece", "uece")}
_HEADERS = {"accuracy": "accuracy", "ece": "ECE", "aece": "AECE", "oece": "O-ECE", "uece": "U-ECE", "nll": "NLL",
            "near_zero": "near-zero", "top1_prob": "top-1 prob", "logit_range": "logit range",
            "ee_active": "EE active", "ee_share": "EE share", "d_within": "d_within", "d_total": "d_total",
            "r2": "R^2", "precision": "precision", "recall": "recall", "f1": "F1", "iou": "IoU",
            "energy_pg": "energy PG", "pointing": "pointing", "pr_area": "PR area"}
_ANALYSIS_TITLES = {"calibration": "Calibration", "logits": "Logits", "separation": "Class separation",
                    "gradcam": "Grad-CAM"}


@dataclass
class CompareResult:
    """What :func:`compare` made: the parts (tables, figures, Results), the paired differences, the files.

    ``to_frame()`` gives one tidy pandas frame of every metric of every analysis (analysis, model, metric,
    value, ci_low, ci_high, ...); ``paired.to_frame()`` the paired differences.
    """

    names: list[str]
    baseline: str
    out: Path
    report: Path
    parts: list[Part]
    paired: object                   # PairedDifferences
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    extracted: list[str] = field(default_factory=list)   # Dumps this run extracted (empty when all were reused)

    def part(self, key: str) -> Part:
        return next(p for p in self.parts if p.key == key)

    def to_frame(self):
        import pandas as pd

        frames = []
        for p in self.parts:
            for r in p.results:
                if not hasattr(r, "to_frame"):
                    continue
                f = r.to_frame()
                if "metric" in f.columns:          # metrics, not per-sample coordinates (projections, embeddings)
                    frames.append(f.assign(analysis=p.key))
        if not frames:
            return pd.DataFrame(columns=["analysis", "model", "metric", "value"])
        frame = pd.concat(frames, ignore_index=True)
        return frame[["analysis", *[c for c in frame.columns if c != "analysis"]]]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "model"


def _check_names(names, count: int, what: str) -> list[str] | None:
    if names is None:
        return None
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    if len(names) != count:
        raise DataError(f"--names gives {len(names)} names for {count} {what}; expected one name per input")
    if any(not n for n in names):
        raise DataError("--names has an empty name; expected one non-empty name per input")
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise DataError(f"--names gives {dup!r} twice; expected one distinct name per input")
    return names


def _load_list(items, names) -> list:
    """Dump folders or Dump objects, renamed by ``names`` when given."""
    from repanalysis.dump import Dump, load_dump

    out = []
    for i, item in enumerate(items):
        d = item if isinstance(item, Dump) else load_dump(item)
        if names:
            d.name = names[i]
        out.append(d)
    return out


def _extract_all(checkpoints, names, data, out: Path, tag: str, opts: dict, log, extracted: list) -> list:
    """One complete Dump per checkpoint on ``data`` under out/dumps/<name>-<tag>: reused when it is a Dump of the
    same run (same checkpoint, data, transform, ...), extracted (resumably) otherwise (:func:`extract_cached`)."""
    import repanalysis as ra
    from repanalysis.data.transforms import override_transform
    from repanalysis.extract.runner import extract_cached

    dumps = []
    for ckpt, name in zip(checkpoints, names):
        lm = ra.load_model(ckpt, opts.get("arch"), trust=opts.get("trust", False), ema=opts.get("ema", False))
        transform = opts.get("transform")
        if isinstance(transform, dict):
            transform = override_transform(lm.transform, **transform)
        target = out / "dumps" / f"{_safe(name)}-{tag}"
        split = opts.get("split") if tag == "val" else None
        dump, reused = extract_cached(lm, data, target, device=opts.get("device", "auto"),
                                      batch_size=opts.get("batch_size", 128), workers=opts.get("workers"),
                                      layout=opts.get("layout", "auto"), split=split,
                                      class_order=opts.get("class_order"), transform=transform, name=name,
                                      progress=opts.get("progress", False), log=log)
        if reused:
            log(f"{name}: reusing {target}")
        else:
            extracted.append(str(target))
            log(f"{name}: extracted {tag} data -> {target}")
        dump.name = name
        dumps.append(dump)
    return dumps


def _recorded_checkpoints(dumps) -> list | None:
    """The checkpoints the Dumps record, when every one is still at its path (Grad-CAM needs the models)."""
    from repanalysis.dump.pairs import checkpoint_of

    paths = [checkpoint_of(d)[0] for d in dumps]
    if all(p and Path(p).is_file() for p in paths):
        return [Path(p) for p in paths]
    return None


def compare(checkpoints: Sequence | None = None, *, dumps: Sequence | None = None, names=None, data=None,
            train_data=None, train_dumps: Sequence | None = None, ood_data=None, ood_dumps: Sequence | None = None,
            boxes=None, classes="auto", baseline: str | None = None, out="runs/compare", n_boot: int = 1000,
            ci_level: float = 0.95, seed: int = 0, n_bins: int = 15, device="auto", arch: str | None = None,
            trust: bool = False, ema: bool = False, transform=None, layout: str = "auto", split: str | None = None,
            class_order=None, batch_size: int = 128, workers: int | None = None, cam_limit: int | None = None,
            cam_options: dict | None = None, embed: bool = True, progress: bool = True, log=None,
            command: str | None = None, title: str | None = None) -> CompareResult:
    """Compare models on the same images: every analysis, paired differences against ``baseline``, a report.

    checkpoints: paths (their Dumps of ``data``, ``train_data`` and ``ood_data`` are extracted under
    ``out/dumps/`` unless a complete Dump of the same run is there: a second run extracts nothing); or dumps:
    Dump folders / Dump objects of the evaluation data (``train_dumps`` / ``ood_dumps`` alike, one per model).
    names: one display name per model (default: the checkpoint stems / Dump names); baseline: the name the
    others are compared against (default: the first). data: the evaluation data set (default: the configured
    one). boxes: object boxes for Grad-CAM (skipped without). classes: the 3-class projection's classes
    (default "auto": the triplet the models confuse most). n_boot / ci_level / seed: the paired bootstrap
    (0: no intervals). Writes into ``out``, replacing an earlier run's files as one set: ``report.html``,
    ``compare.json`` (the summary and the list of files), ``<analysis>.json``, ``tables/*.{md,csv,json}`` and
    ``figures/**.{png,pdf}``; every JSON carries the provenance. Returns a :class:`CompareResult`.
    """
    from repanalysis.analyze.paired import PairedDifferences
    from repanalysis.arrays import check_number, pick_device
    from repanalysis.dump.pairs import check_same_samples
    from repanalysis.dump.provenance import provenance
    from repanalysis.outputs import output_set, write_csv_atomic, write_json_atomic
    from repanalysis.paths import as_path

    start = time.perf_counter()
    log = log or (lambda message: None)
    out = as_path(out, "out")
    n_boot = check_number(n_boot, "n_boot (bootstrap resamples)", integer=True, minimum=0)
    ci_level = check_number(ci_level, "ci_level", minimum=0.0, maximum=1.0)
    if not 0 < ci_level < 1:
        raise DataError(f"ci_level must lie strictly between 0 and 1; got {ci_level}")
    if (checkpoints is None) == (dumps is None):
        raise DataError("compare needs either checkpoints or dumps (one per model), not "
                        + ("both" if checkpoints is not None else "neither"))
    inputs = list(checkpoints if checkpoints is not None else dumps)
    if len(inputs) < 2:
        raise DataError(f"compare needs at least two models; got {len(inputs)}")
    names = _check_names(names, len(inputs), "checkpoints" if checkpoints is not None else "Dumps")
    dev = pick_device(device)
    extracted: list[str] = []
    if checkpoints is not None:
        from repanalysis.text import display_text

        checkpoints = [as_path(c, "checkpoint") for c in checkpoints]
        missing = [str(c) for c in checkpoints if not c.is_file()]
        if missing:
            raise DataError(f"checkpoint {missing[0]} does not exist; expected a checkpoint file")
        names = names or _check_names([display_text(c.stem) for c in checkpoints], len(checkpoints), "checkpoints")
        if data is None:
            from repanalysis import config

            default = config.default_data()
            data, layout = default["spec"], layout if layout != "auto" else (default["layout"] or "auto")
            split, class_order = split or default["split"], class_order or default["class_order"]
        opts = {"arch": arch, "trust": trust, "ema": ema, "transform": transform, "device": dev,
                "batch_size": batch_size, "workers": workers, "layout": layout, "split": split,
                "class_order": class_order, "progress": progress}
        val = _extract_all(checkpoints, names, data, out, "val", opts, log, extracted)
        train = _extract_all(checkpoints, names, train_data, out, "train", opts, log, extracted) \
            if train_data is not None else None
        ood = _extract_all(checkpoints, names, ood_data, out, "ood", opts, log, extracted) \
            if ood_data is not None else None
    else:
        val = _load_list(dumps, names)
        names = names or [d.name for d in val]
        _check_names(names, len(val), "Dumps")
        train = _load_list(train_dumps, names) if train_dumps else None
        ood = _load_list(ood_dumps, names) if ood_dumps else None
        for what, group in (("--train-dump", train), ("--ood-dump", ood)):
            if group is not None and len(group) != len(val):
                raise DataError(f"{what} was given {len(group)} times for {len(val)} models; expected one per model")
        checkpoints = _recorded_checkpoints(val)
        if data is None:
            root = (val[0].meta.get("dataset") or {}).get("root") if isinstance(val[0].meta, dict) else None
            data = root if root and Path(root).exists() else None
    baseline = names[0] if baseline is None else baseline
    if baseline not in names:
        raise DataError(f"baseline {baseline!r} is not one of the models ({', '.join(names)}); expected one of "
                        "their names")
    check_same_samples(val, "compare")
    if train is not None:
        check_same_samples(train, "compare (training data)")
    job = Job(names=names, val=val, train=train, ood=ood, checkpoints=checkpoints, data=data, boxes=boxes,
              classes=classes, baseline=baseline, figures=out / "figures", n_boot=n_boot, seed=seed,
              ci_level=ci_level, n_bins=n_bins, device=dev, cam_limit=cam_limit, cam_options=dict(cam_options or {}),
              embed=embed, progress=progress, log=log)
    check_finite_rows(job)
    prov = provenance([*val, *(train or []), *(ood or [])], command=command)
    old = _old_files(out)
    files: list[Path] = []
    with output_set() as outputs:             # the whole report replaces the last run's, or nothing does
        parts = []
        for make in PARTS:
            t0 = time.perf_counter()
            part = make(job)
            parts.append(part)
            log(f"{part.title}: {'skipped (' + part.skipped + ')' if part.skipped else 'done'} "
                f"in {time.perf_counter() - t0:.1f}s")
        paired = PairedDifferences(baseline=baseline, n_boot=n_boot, ci_level=ci_level, seed=seed,
                                   rows=[row for p in parts for row in p.paired])
        tables = _paired_tables(paired, names)
        for p in parts:
            tables += p.tables
        for t in tables:
            files += _write_table(out / "tables", t, prov)
        write_csv_atomic(out / "tables" / "paired_differences.csv", paired.table_rows())
        write_json_atomic(out / "tables" / "paired_differences.json", {**paired.to_dict(), "provenance": prov})
        files += [out / "tables" / "paired_differences.csv", out / "tables" / "paired_differences.json"]
        for p in parts:
            if not p.skipped:
                write_json_atomic(out / f"{p.key}.json", {**p.payload, "provenance": prov})
                files.append(out / f"{p.key}.json")
                files += [f for fig in p.figures for f in (fig.path, fig.path.with_suffix(".pdf"))]
        report = _write_report(out, parts, paired, tables, names, baseline, prov, title, val[0].num_samples)
        files.append(report)
        rel = sorted({str(f.relative_to(out)) for f in files} | {MANIFEST})
        write_json_atomic(out / MANIFEST, {
            "models": names, "baseline": baseline, "report": "report.html",
            "analyses": {p.key: ("skipped: " + p.skipped) if p.skipped else "done" for p in parts},
            "paired": paired.to_dict(), "files": rel, "provenance": prov})
        outputs.discard(*[out / f for f in old if f not in rel])       # an older report's files this one lacks
    seconds = time.perf_counter() - start
    log(f"wrote {report} in {seconds:.1f}s")
    return CompareResult(names=names, baseline=baseline, out=out, report=report, parts=parts, paired=paired,
                         files=[out / f for f in rel], seconds=seconds, extracted=extracted)


def _old_files(out: Path) -> list[str]:
    """The files the last compare run wrote in ``out`` (its manifest), relative, never outside ``out``."""
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and ".." not in Path(f).parts and not Path(f).is_absolute()]


def _write_table(folder: Path, t, prov) -> list[Path]:
    from repanalysis.outputs import write_csv_atomic, write_json_atomic, write_text_atomic
    from repanalysis.report.tables import markdown_table

    folder.mkdir(parents=True, exist_ok=True)
    shown = t.display or t.rows
    md = f"**{t.title}.** {t.caption}\n\n" + markdown_table(shown, t.columns if not t.display else None, t.digits,
                                                           t.headers) + "\n"
    write_text_atomic(folder / f"{t.stem}.md", md)
    write_csv_atomic(folder / f"{t.stem}.csv", t.rows)
    write_json_atomic(folder / f"{t.stem}.json", {"title": t.title, "caption": t.caption, "rows": t.rows,
                                                  "provenance": prov})
    return [folder / f"{t.stem}.{ext}" for ext in ("md", "csv", "json")]


def _paired_tables(paired, names: list[str]) -> list:
    """One wide table per analysis and split: a row per model (the baseline's values, then each model's difference
    with its interval; a star where the interval excludes 0)."""
    from repanalysis.compare.parts import TableOut

    groups: dict[tuple, list] = {}
    for row in paired.rows:
        groups.setdefault((row.analysis, row.split), []).append(row)
    level = f"{100 * paired.ci_level:g}%"
    tables = []
    for (analysis, split), rows in groups.items():
        metrics = list(dict.fromkeys(r.metric for r in rows))
        scale = {m: _SCALE.get((analysis, m), 1) for m in metrics}
        header = {m: _HEADERS.get(m, m) + (" %" if scale[m] == 100 else "") for m in metrics}
        base = {"model": f"{paired.baseline} (baseline)"}
        for r in rows:
            base[header[r.metric]] = f"{scale[r.metric] * r.baseline_value:.4g}"
        display, numeric = [base], []
        for model in names:
            if model == paired.baseline:
                continue
            cells = {"model": model}
            for r in (r for r in rows if r.model == model):
                s = scale[r.metric]
                cells[header[r.metric]] = (f"{s * r.difference:+.3g} [{s * r.ci_low:+.3g}, {s * r.ci_high:+.3g}]"
                                           + (" \u2605" if r.excludes_zero else ""))
                numeric.append(r.row())
            display.append(cells)
        what = f"{_ANALYSIS_TITLES.get(analysis, analysis)}, {'training' if split == 'train' else 'evaluation'} data"
        tables.append(TableOut(
            f"paired_{analysis}_{split}", f"Paired differences: {what}",
            f"First row: the baseline {paired.baseline}'s values; other rows: model minus baseline on the same images, "
            f"with the {level} paired bootstrap interval ({paired.n_boot} resamples of the images, the same for every "
            "model); \u2605 marks a difference whose interval excludes 0, one that resampling noise does not explain.",
            numeric, display=display))
    return tables


def _write_report(out: Path, parts, paired, tables, names, baseline, prov, title, n_samples: int) -> Path:
    from repanalysis.report.html import Figure, Section, Table, write_report

    def table(t):
        return Table(t.caption, t.display or t.rows, headers=None if t.display else t.headers,
                     columns=None if t.display else t.columns, digits=t.digits, title=t.title)

    paired_tables = [t for t in tables if t.stem.startswith("paired_")]
    sections = []
    if paired.n_boot:
        sig = paired.significant()
        summary = (f"{len(sig)} of {len(paired.rows)} differences against {baseline} have a {100 * paired.ci_level:g}% "
                   "interval that excludes 0" + (": " + "; ".join(f"{r.model} {_HEADERS.get(r.metric, r.metric)} "
                                                                  f"({r.analysis}, {r.split})" for r in sig[:12])
                                                 if sig else "") + (" ..." if len(sig) > 12 else "") + ".")
        sections.append(Section(f"Paired differences against {baseline}", [summary, *map(table, paired_tables)],
                                anchor="paired"))
    else:
        sections.append(Section(f"Paired differences against {baseline}", [], skipped="the bootstrap was turned off "
                                "(n_boot = 0), so there are no intervals", anchor="paired"))
    for p in parts:
        if p.skipped:
            sections.append(Section(p.title, [], skipped=p.skipped, anchor=p.key))
            continue
        items = ([p.intro] if p.intro else []) + [table(t) for t in p.tables]
        items += [Figure(f.caption, f.path, title=f.title) for f in p.figures] + list(p.notes)
        sections.append(Section(p.title, items, anchor=p.key))
    subtitle = f"{len(names)} models ({', '.join(names)}) on the same {n_samples:,} images; baseline {baseline}"
    return write_report(out / "report.html", title or f"What the loss did: {', '.join(names)}", sections,
                        provenance=prov, subtitle=subtitle)
