"""Render a classifier report: the terminal table, figures, and the report files.

`cxraug report RUN...` and the last stage of `cxraug study` call :func:`make_report`, which
runs, in order, :func:`classifier.runset.collect_runs` (read and check the run directories),
:func:`classifier.report_notes.check_provenance`, :func:`classifier.report.summarize_arms` (the
statistics), :func:`classifier.fairness.summarize_fairness` (the Subgroups section) and
:func:`write_report` (report.md, report.csv, report.json, report.html, fairness.csv,
fairness_gaps.csv).

This module owns the report folder: it writes those files (report.json last: its presence
means done) and reads report.json back (:func:`load_report`). The statistics themselves, and
why they are what they are, are `classifier.report`'s. A report opens with its primary
endpoint (`classifier.endpoints`), then the macro table, the comparisons (every Δ, the
secondary ones with their Holm-adjusted intervals and what the two arms' data differ in),
what each arm saw (`classifier.budget`), the per-label table, the subgroups (AUROC per label x
subgroup and underdiagnosis gaps, `classifier.fairness`), and the runs with their realised
steps and scored epochs (`classifier.steps`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from classifier.arms import Arm
from classifier.config import ReportConfig, parse_comparison
from classifier.efficiency import (
    BEYOND,
    efficiency_figure,
    efficiency_table,
    full_gain_share,
    report_draws,
    share_text,
    synthetic_worth,
    worth_text,
)
from classifier.endpoints import comparisons_table
from classifier.fairness import GAP_COLUMNS, SUBGROUP_COLUMNS, Fairness, summarize_fairness
from classifier.report import (
    FPR_GRID,
    TABLE_COLUMNS,
    Report,
    summarize_arms,
)
from classifier.report_notes import MIN_SEEDS, check_provenance
from classifier.report_tables import (
    BUDGET_TEXT,
    balance_summary,
    budget_rows,
    comparison_rows,
    display_rows,
    fairness_text,
    gap_rows,
    gap_summary,
    method_text,
    missing,
    primary_text,
    runs_rows,
    subgroup_rows,
)
from classifier.runset import collect_runs
from classifier.tables import fmt, html_table, md_table, print_table
from manifests.demographics import DEFAULT_AGE_EDGES
from manifests.errors import UserError
from manifests.files import atomic_path, check_output_folder, write_json
from manifests.io import read_manifest

REPORT_FILES = (
    "report.md",
    "report.csv",
    "report.json",
    "report.html",
    "fairness.csv",  # per arm x label x subgroup (classifier.fairness.SUBGROUP_COLUMNS)
    "fairness_gaps.csv",  # the underdiagnosis gaps (classifier.fairness.GAP_COLUMNS)
)
REPORT_VERSION = 5  # 5: Subgroups (report.json `fairness`, fairness*.csv), balanced arms vs twins


# ------------------------------------------------------------------------------ display


def print_report(report, title: str = "AUROC per arm", out=None) -> None:
    from rich.console import Console

    out = out or Console(soft_wrap=True)
    # Narrow terminals get the essential columns; report.md/.csv/.html have them all.
    headers, rows = display_rows(report, compact=out.width < 120)
    numbers = set(range(2, len(headers)))  # numbers never wrap; arm and label names may
    styles = ["bold" if row[1] == "macro" else None for row in rows]
    print_table(
        headers, rows, title, right=numbers, no_wrap=numbers, keys=2, styles=styles, out=out
    )
    out.print(primary_text(report))
    for note in report.notes:
        out.print(f"note: {note}")


def print_fairness(report: Report, out=None) -> None:
    """The Subgroups summary: AUROC and FNR per arm, label and sex or age group, the gap
    table, and which gap deltas' intervals exclude 0 (intersections: in the files)."""
    from rich.console import Console

    out = out or Console(soft_wrap=True)
    f = report.fairness
    if f is None or f.unavailable:
        out.print(fairness_text(report))
        return
    headers, rows = subgroup_rows(report, intersections=False)
    numbers = set(range(3, len(headers)))
    print_table(
        headers, rows, "AUROC per subgroup", right=numbers, no_wrap=numbers, keys=3, out=out
    )
    headers, rows = gap_rows(report)
    numbers = set(range(4, len(headers)))
    title = "underdiagnosis gap (FNR at the val threshold, subgroup − reference)"
    print_table(headers, rows, title, right=numbers, no_wrap=numbers, keys=4, out=out)
    out.print(gap_summary(report))
    if balance_summary(report):
        out.print(balance_summary(report))
    for note in f.notes:
        out.print(f"note: {note}")


# ------------------------------------------------------------------------------ figures


def _png(fig) -> str:
    """Base64 PNG of a matplotlib Figure (Agg canvas; no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def roc_figure(report: Report, label: str) -> str | None:
    """Base64 PNG: the label's mean ROC curve per arm (None if the label is undefined)."""
    from matplotlib.figure import Figure

    curves = [(arm, report.roc[arm][label]) for arm in report.arms if label in report.roc[arm]]
    if not curves:
        return None
    means = report.table.set_index(["arm", "label"])["auroc_mean"]
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
    for arm, tpr in curves:
        n = int(report.table[(report.table.arm == arm)].n_runs.iloc[0])
        ax.plot(
            FPR_GRID,
            tpr,
            lw=1.8 if arm == report.baseline else 1.3,
            label=f"{arm} ({fmt(means[(arm, label)])}, {n} seed{'s' * (n > 1)})",
        )
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=7)
    return _png(fig)


def grid_figure(rows, figsize: tuple[float, float], columns: int):
    """A matplotlib Figure with one row of grayscale images per `(label, paths)` in `rows`
    (`columns` cells a row; a None path, or a short row, leaves a cell empty)."""
    from matplotlib.figure import Figure

    from manifests.images import load_image

    fig = Figure(figsize=figsize)
    for i, (label, paths) in enumerate(rows):
        for k in range(columns):
            ax = fig.add_subplot(len(rows), columns, i * columns + k + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if k < len(paths) and paths[k] is not None:
                ax.imshow(load_image(Path(paths[k])), cmap="gray", vmin=0, vmax=255)
            if k == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    return fig


def sample_grid(synthetic: Path, labels: Sequence[str], per_label: int = 6) -> str | None:
    """Base64 PNG: a row of synthetic images per target label (None if there are none)."""

    manifest = read_manifest(Path(synthetic))
    rows = manifest.rows.assign(_path=[str(p) for p in manifest.image_paths()])
    if "target_label" not in rows:
        return None
    groups = [
        (label, rows[rows["target_label"] == label].head(per_label))
        for label in [*labels, *sorted(set(rows["target_label"].dropna()) - set(labels))]
    ]
    groups = [(label, g) for label, g in groups if len(g)]
    if not groups:
        return None
    rows = [(label, [Path(p) for p in group["_path"]]) for label, group in groups]
    fig = grid_figure(rows, (1.4 * per_label + 1.6, 1.5 * len(groups)), per_label)
    return _png(fig)


# ------------------------------------------------------------------------------ files

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1240px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em;display:block;max-width:100%;
overflow-x:auto}th{overflow-wrap:normal;word-break:normal;hyphens:none}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
tr:nth-child(even) td{background:#fafafa}
.notes li{color:#7a4b00}.method{color:#444;font-size:.92em}
.figs{display:flex;flex-wrap:wrap;gap:.6em}.figs img{max-width:340px;border:1px solid #eee}
img.grid{max-width:100%;border:1px solid #eee}
"""


def _report_json(report: Report) -> dict:
    table = report.table.astype(object).where(report.table.notna(), None)
    runs = report.runs.astype(object).where(report.runs.notna(), None)
    return {
        "report_version": REPORT_VERSION,
        "labels": list(report.labels),
        "arms": report.arms,
        "baseline": report.baseline,
        "n_test_images": report.n_test_images,
        "n_test_patients": report.n_test_patients,
        "n_boot": report.n_boot,
        "ci_level": report.ci_level,
        "bootstrap_seed": report.bootstrap_seed,
        "method": method_text(report),
        "notes": report.notes,
        "matched": report.matched,
        "oversampled": report.oversampled,
        "twins": report.twins,
        "min_seeds": MIN_SEEDS,
        "min_positive_patients": report.min_positive_patients,
        "macro_labels": list(report.macro_labels),
        "per_arm": report.per_arm,
        "primary": _json_ready(report.primary),
        "n_secondary": report.n_secondary,
        "comparisons": [_json_ready(c) for c in comparisons_table(report.table)],
        "rows": table.to_dict(orient="records"),
        "runs": runs.to_dict(orient="records"),
        "synthetic": report.synthetic,
        "fairness": report.fairness.to_json() if report.fairness is not None else None,
        "data_efficiency": {
            "rows": efficiency_table(report).to_dict(orient="records"),
            # a crossing past the largest measured size is written as BEYOND, NaN as null
            "synthetic_worth": [
                _efficiency_json(w)
                for w in synthetic_worth(efficiency_table(report), report_draws(report))
            ],
            "full_gain_share": [_efficiency_json(s) for s in full_gain_share(report)],
        },
    }


def _efficiency_json(record: dict) -> dict:
    """A worth or share record for report.json: inf as BEYOND, NaN as null."""

    def value(v):
        if isinstance(v, float) and math.isinf(v):
            return BEYOND
        return None if isinstance(v, float) and math.isnan(v) else v

    return {k: value(v) for k, v in record.items()}


def _json_ready(record: dict | None) -> dict | None:
    """A record with NaN (and pandas' missing values) as None: JSON has no NaN."""
    if record is None:
        return None
    return {k: (None if missing(v) else v) for k, v in record.items()}


def _subgroups_md(report: Report) -> list[str]:
    """The Subgroups section in Markdown (nothing for a report without it)."""
    if report.fairness is None:
        return []
    md = ["\n## Subgroups\n\n", fairness_text(report) + "\n\n"]
    if report.fairness.unavailable:
        return md
    md += [f"- note: {n}\n" for n in report.fairness.notes]
    md += ["\n", md_table(*subgroup_rows(report))]
    md += ["\n### Underdiagnosis gaps\n\n", gap_summary(report) + "\n\n"]
    if balance_summary(report):
        md.append(balance_summary(report) + "\n\n")
    md.append(md_table(*gap_rows(report)))
    return md


def _subgroups_html(report: Report) -> list[str]:
    """The Subgroups section in HTML (nothing for a report without it)."""
    if report.fairness is None:
        return []
    parts = ["<h2>Subgroups</h2>", f"<p class='method'>{html.escape(fairness_text(report))}</p>"]
    if report.fairness.unavailable:
        return parts
    if report.fairness.notes:
        parts.append(
            "<ul class='notes'>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in report.fairness.notes)
            + "</ul>"
        )
    parts.append(html_table(*subgroup_rows(report), "subgroups"))
    parts += ["<h3>Underdiagnosis gaps</h3>", f"<p>{html.escape(gap_summary(report))}</p>"]
    if balance_summary(report):
        parts.append(f"<p><b>{html.escape(balance_summary(report))}</b></p>")
    parts.append(html_table(*gap_rows(report), "gaps"))
    return parts


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(
    report: Report,
    out: Path,
    synthetic: Path | None = None,
    sections: Sequence[dict[str, str]] = (),
    overwrite: bool = False,
    title: str = "cxraug augmentation study",
) -> dict[str, Path]:
    """Write report.md, report.csv, report.json, a self-contained report.html, and the
    Subgroups tables fairness.csv and fairness_gaps.csv (headers only without them).

    Args:
        report: from :func:`summarize_arms`.
        out: output folder.
        synthetic: a synthetic manifest for the sample grid (default: the one the runs used).
        sections: extra fragments `{'md': ..., 'html': ...}` appended (e.g. the generator
            evaluation of `augmentor.evaluate.generator_section`).
        overwrite: replace an existing report in `out`.
        title: the page title.

    Returns:
        {file name: path} of the files written.
    """
    out = Path(out)
    if (out / "report.json").exists() and not overwrite:
        raise UserError(f"--out: {out} already holds a report; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if synthetic is not None and not Path(synthetic).is_file():
        raise UserError(f"--synthetic: {synthetic} not found")
    if synthetic is None and report.synthetic:
        # The manifest the runs trained on; it may have moved since.
        if Path(report.synthetic).is_file():
            synthetic = Path(report.synthetic)
        else:
            report.notes.append(f"synthetic manifest {report.synthetic} not found: no sample grid")
    grid = sample_grid(Path(synthetic), report.labels) if synthetic else None

    headers, rows = display_rows(report)
    run_headers, run_rows = runs_rows(report)
    macro_headers, macro_rows = display_rows(report, macro_only=True)

    comp_headers, comp_rows = comparison_rows(report)
    budget_headers, budget_table = budget_rows(report)

    # Markdown
    md = [f"# {title}\n\n", f"**{primary_text(report)}**\n\n", method_text(report) + "\n\n"]
    md += [f"- note: {n}\n" for n in report.notes]
    md += ["\n## Macro AUROC\n\n", md_table(macro_headers, macro_rows)]
    if comp_rows:
        md += ["\n## Comparisons\n\n", md_table(comp_headers, comp_rows)]
    if budget_table:
        md += ["\n## What each arm saw\n\n", BUDGET_TEXT + "\n\n"]
        md.append(md_table(budget_headers, budget_table))
    md += ["\n## Per label\n\n", md_table(headers, rows)]
    efficiency = efficiency_table(report)
    worth = synthetic_worth(efficiency, report_draws(report))
    shares = full_gain_share(report)
    if len(efficiency):
        md += ["\n## Data efficiency: AUROC against real train size\n\n"]
        md += [f"{worth_text(w)}\n\n" for w in worth]
        md += [f"{share_text(s)}\n\n" for s in shares]
        eff_rows = [
            [r.family, r.label, f"{r.n_real:.0f}", fmt(r.auroc_mean),
             f"[{fmt(r.auroc_lo)}, {fmt(r.auroc_hi)}]"]
            for r in efficiency.itertuples(index=False)
        ]  # fmt: skip
        md.append(md_table(["arm", "label", "real train", "AUROC", "95% CI"], eff_rows))
    md += _subgroups_md(report)
    md += ["\n## Runs\n\n", md_table(run_headers, run_rows)]
    if synthetic:
        md.append(f"\nSynthetic samples: {synthetic} (grid in report.html).\n")
    md += ["\n" + s["md"] for s in sections if s.get("md")]

    # HTML
    figures = [(label, roc_figure(report, label)) for label in report.labels]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p><strong>{html.escape(primary_text(report))}</strong></p>",
        f"<p class='method'>{html.escape(method_text(report))}</p>",
    ]
    if report.notes:
        parts.append(
            "<ul class='notes'>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
            + "</ul>"
        )
    parts += [
        "<h2>Macro AUROC</h2>",
        html_table(macro_headers, macro_rows, "summary"),
    ]
    if comp_rows:
        parts += ["<h2>Comparisons</h2>", html_table(comp_headers, comp_rows, "comparisons")]
    if budget_table:
        parts += [
            "<h2>What each arm saw</h2>",
            f"<p class='method'>{html.escape(BUDGET_TEXT)}</p>",
            html_table(budget_headers, budget_table, "budget"),
        ]
    parts += [
        "<h2>Per label</h2>",
        html_table(headers, rows, "labels"),
        "<h2>ROC curves (mean over seeds, per arm)</h2><div class='figs'>",
    ]
    for label, png in figures:
        if png:
            parts.append(f"<img alt='ROC {html.escape(label)}' src='data:image/png;base64,{png}'/>")
        else:
            parts.append(f"<p>{html.escape(label)}: no ROC curve (one class in the test set)</p>")
    parts.append("</div>")
    if grid:
        parts += [
            "<h2>Synthetic samples per label</h2>",
            f"<p class='method'>{html.escape(str(synthetic))}</p>",
            f"<img class='grid' alt='synthetic samples' src='data:image/png;base64,{grid}'/>",
        ]
    if len(efficiency):
        png = efficiency_figure(efficiency)
        parts.append("<h2>Data efficiency: AUROC against real train size</h2>")
        parts += [f"<p>{html.escape(worth_text(w))}</p>" for w in worth]
        parts += [f"<p>{html.escape(share_text(s))}</p>" for s in shares]
        parts.append(f"<img class='grid' alt='data efficiency' src='data:image/png;base64,{png}'/>")
    parts += _subgroups_html(report)
    parts += ["<h2>Runs</h2>", html_table(run_headers, run_rows, "runs")]
    parts += [s["html"] for s in sections if s.get("html")]
    parts.append("</body></html>\n")

    paths = {name: out / name for name in REPORT_FILES}
    with atomic_path(paths["report.csv"], overwrite=True) as tmp:
        report.table.to_csv(tmp, index=False, float_format="%.6g")
    f = report.fairness
    for name, frame, columns in (
        ("fairness.csv", f.subgroups if f else None, SUBGROUP_COLUMNS),
        ("fairness_gaps.csv", f.gaps if f else None, GAP_COLUMNS),
    ):
        with atomic_path(paths[name], overwrite=True) as tmp:
            frame = pd.DataFrame(columns=columns) if frame is None else frame
            frame.to_csv(tmp, index=False, float_format="%.6g")
    _write_text(paths["report.md"], "".join(md))
    _write_text(paths["report.html"], "".join(parts))
    write_json(paths["report.json"], _report_json(report))  # last: its presence means done
    return paths


_FLOAT_COLUMNS = [
    c
    for c in TABLE_COLUMNS
    if c.startswith(("auroc_", "delta", "relative_")) and not c.endswith("_role")
]


def load_report(out: Path) -> Report:
    """A written report read back from `out/report.json` (without the ROC curves)."""
    path = Path(out) / "report.json"
    if not path.is_file():
        raise UserError(f"{out}: no report.json; make the report first (cxraug report)")
    doc = json.loads(path.read_text())
    table = pd.DataFrame(doc["rows"], columns=TABLE_COLUMNS)
    for column in _FLOAT_COLUMNS:
        table[column] = table[column].astype(float)  # JSON null -> NaN
    return Report(
        table=table,
        labels=tuple(doc["labels"]),
        arms=list(doc["arms"]),
        baseline=doc["baseline"],
        runs=pd.DataFrame(doc["runs"]),
        n_test_images=doc["n_test_images"],
        n_test_patients=doc["n_test_patients"],
        n_boot=doc["n_boot"],
        ci_level=doc["ci_level"],
        bootstrap_seed=doc["bootstrap_seed"],
        notes=list(doc["notes"]),
        synthetic=doc.get("synthetic"),
        matched=dict(doc.get("matched") or {}),
        oversampled=dict(doc.get("oversampled") or {}),
        twins=dict(doc.get("twins") or {}),
        min_positive_patients=doc.get("min_positive_patients", 1),
        macro_labels=tuple(doc.get("macro_labels", doc["labels"])),
        per_arm=dict(doc.get("per_arm") or {}),
        primary=doc.get("primary"),
        n_secondary=int(doc.get("n_secondary") or 0),
        arm_info={arm: Arm.parse(arm) for arm in doc["arms"]},  # report.json keeps names only
        fairness=Fairness.from_json(doc["fairness"]) if doc.get("fairness") else None,
    )


def make_report(
    cfg: ReportConfig,
    sections: Sequence[dict[str, str]] = (),
    age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
) -> tuple[Report, dict[str, Path]]:
    """collect_runs -> provenance check -> summarize_arms -> summarize_fairness ->
    write_report (CLI and study).

    `sections` are extra report sections ({'md', 'html'}), e.g. the generator evaluation's;
    `cfg.generator_eval` is read by the caller, which owns that folder's reader.
    `age_edges` are the Subgroups section's age-group edges.
    """
    check_output_folder(cfg.out, "--out")  # before any work
    if cfg.primary is not None:
        parse_comparison(cfg.primary)  # its form; the arms it names once the runs are read
    runset = collect_runs(cfg.runs)
    foreign = check_provenance(runset, cfg.allow_foreign_synthetic)
    report = summarize_arms(
        runset,
        baseline=cfg.baseline,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        min_positive_patients=cfg.min_positive_patients,
        primary=cfg.primary,
    )
    report.notes[:0] = foreign  # the header says so first
    report.fairness = summarize_fairness(runset, report, age_edges)
    return report, write_report(report, cfg.out, cfg.synthetic, sections, cfg.overwrite)


__all__ = [
    "display_rows",
    "print_fairness",
    "load_report",
    "make_report",
    "roc_figure",
    "sample_grid",
    "write_report",
]
