"""Demo step: feature geometry of the CE / LS / MaxSup models (MaxSup Table 2, Table 3, Fig. 4-5, App. G).

Class separation (d_within, d_total, R^2) on train and test, Müller 3-class projections of ctx.classes,
a UMAP of the test features, neural collapse on train, and a linear probe on a downstream data set
(scikit-learn's 1,797 real 8x8 handwritten digits, a different source than MNIST, upscaled to 28x28).
"""
from __future__ import annotations

ORDER = 30
TITLE = "Feature geometry: class separation, 3-class projections, UMAP, neural collapse, linear transfer"
EMBED_METHOD = "umap"


def _downstream_digits(folder):
    """scikit-learn's digits as MNIST-like 28x28 images (20x20 digit, 4-pixel border): train / test .npz."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from repanalysis.train.trainer import DIGIT_NAMES, write_npz

    paths = {s: folder / f"sklearn_digits_{s}.npz" for s in ("train", "test")}
    if all(p.exists() for p in paths.values()):
        return paths
    digits = load_digits()
    small = (digits.images / 16.0 * 255.0).astype(np.uint8)
    big = np.zeros((len(small), 28, 28), dtype=np.uint8)
    big[:, 4:24, 4:24] = np.stack([np.asarray(Image.fromarray(im).resize((20, 20), Image.BILINEAR))
                                   for im in small])
    order = np.random.default_rng(0).permutation(len(big))
    cut = 1200
    write_npz(paths["train"], big[order[:cut]], digits.target[order[:cut]].astype(np.int64), DIGIT_NAMES)
    write_npz(paths["test"], big[order[cut:]], digits.target[order[cut:]].astype(np.int64), DIGIT_NAMES)
    return paths


def run(ctx) -> None:
    """Write separation, projection, embedding, collapse and transfer outputs under ``ctx.out / 'geometry'``."""
    from repanalysis.analyze.collapse import neural_collapse
    from repanalysis.analyze.embed import embed_dumps
    from repanalysis.analyze.geometry import class_separation, separation_table
    from repanalysis.analyze.projection import project_dump
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.report import write_csv_atomic
    from repanalysis.data.class_resolution import resolve_for_dumps
    from repanalysis.plot.geometry import (plot_embeddings, plot_feature_norms, plot_projections,
                                           plot_separation_bars)
    from repanalysis.plot.style import save_figure
    from repanalysis.report import format_table, write_json_atomic

    out = ctx.out / "geometry"
    out.mkdir(parents=True, exist_ok=True)
    names = ctx.model_names
    written = []

    # MaxSup Table 2: d_within / d_total / R^2, train and test side by side
    seps = [class_separation(ctx.dumps[n][split], name=n, split=split) for n in names for split in ("train", "test")]
    ctx.log(format_table(separation_table(seps)))
    all_dumps = [ctx.dumps[n][split] for n in names for split in ("train", "test")]
    write_json_atomic(out / "separation.json", with_provenance([r.to_dict() for r in seps], all_dumps))
    written += save_figure(plot_separation_bars(seps)[0].figure, out / "separation")

    # Müller 3-class projections of the demo's triplet, template (with decision regions) and centroid
    test_dumps = [ctx.dumps[n]["test"] for n in names]
    classes = resolve_for_dumps(ctx.classes, test_dumps)
    for method in ("template", "centroid"):
        projs = [project_dump(d, classes, method=method, samples_per_class=80, seed=0, name=n)
                 for n, d in zip(names, test_dumps)]
        written += save_figure(plot_projections(projs, decision_regions=True, split="test"),
                               out / f"projection_{method}")
        write_csv_atomic(out / f"projection_{method}_coords.csv", [row for r in projs for row in r.to_rows()])
    auto = resolve_for_dumps("auto", test_dumps)
    ctx.log(f"projected classes {', '.join(ctx.classes)}; the triplet the models confuse most is "
            f"{', '.join(ctx.class_names[i] for i in auto)}")

    # UMAP of all ten digits (test split)
    embs = embed_dumps(test_dumps, None, names=names, method=EMBED_METHOD, samples_per_class=100, seed=0,
                       progress=ctx.progress)
    written += save_figure(plot_embeddings(embs, split="test"), out / f"embedding_{EMBED_METHOD}")

    # neural collapse on the train split
    cols = [neural_collapse(ctx.dumps[n]["train"], name=n) for n in names]
    ctx.log(format_table([r.summary() for r in cols]))
    write_json_atomic(out / "collapse.json", with_provenance([r.to_dict() for r in cols],
                                                             [ctx.dumps[n]["train"] for n in names]))
    norms = plot_feature_norms(cols, class_names=ctx.class_names, split="train")
    written += save_figure(norms.figure, out / "feature_norms")

    # MaxSup Table 3 setting: linear probe of frozen features on a downstream data set
    _transfer(ctx, out)
    ctx.log(f"wrote {len(written)} figure files and separation/collapse/transfer JSON to {out}")


def _transfer(ctx, out):
    """Extract each model's features of the downstream digits (reused when present) and probe them."""
    import repanalysis as ra
    from repanalysis.analyze.transfer import probe_dumps
    from repanalysis.report import format_table, write_json_atomic

    data = _downstream_digits(out / "downstream")
    from repanalysis.dump.provenance import with_provenance

    probes, probe_dumps_used = [], []
    for n in ctx.model_names:
        lm = ra.load_model(ctx.checkpoints[n])
        dumps = {s: ra.extract(lm, p, out / "downstream" / f"{n}_{s}", progress=False, workers=0, batch_size=256,
                               name=n, overwrite=True, reuse=True) for s, p in data.items()}   # same run: reused
        probe_dumps_used += [dumps["train"], dumps["test"]]
        probes.append(probe_dumps(dumps["train"], dumps["test"], seed=0, device=ctx.device, name=n,
                                  progress=ctx.progress))
    ctx.log(format_table([{"model": r.name, "downstream test acc": r.test_accuracy, "l2": f"{r.l2:g}",
                           "N train": r.n_train, "N test": r.n_test} for r in probes]))
    write_json_atomic(out / "transfer.json", with_provenance([r.to_dict() for r in probes], probe_dumps_used))
    return probes
