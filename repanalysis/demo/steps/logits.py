"""Demo step: logit statistics of the CE / LS / MaxSup models on the test split (MaxSup Fig. 2/3)."""
from __future__ import annotations

ORDER = 20
TITLE = "Logit statistics: near-zero logits, top-1 probability, LS error-enhancement (MaxSup Fig. 2/3)"


def run(ctx) -> None:
    """Compare the models' test-split logits; write figures and logit_stats.json under ``ctx.out / 'logits'``."""
    from repanalysis.analyze.logits import TABLE_HEADERS, compare_logits, comparison_dict, comparison_table
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.plot.logits import save_logit_figures
    from repanalysis.report import format_table, write_json_atomic

    out = ctx.out / "logits"
    out.mkdir(parents=True, exist_ok=True)
    names = ctx.model_names
    results = compare_logits([ctx.dumps[n]["test"] for n in names], names=names, threshold=0.01, alpha=0.1,
                             device=ctx.device)
    ctx.log(format_table(comparison_table(results), headers=TABLE_HEADERS))
    write_json_atomic(out / "logit_stats.json", with_provenance(comparison_dict(results),
                                                                [ctx.dumps[n]["test"] for n in names]))
    written = save_logit_figures(results, out)
    ctx.log(f"wrote logit_stats.json and {len(written)} figure files to {out}")
