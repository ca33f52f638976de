"""The generator evaluation for people: terminal tables, the report section, the audit figure.

Pure rendering of what `augmentor.evaluate` measured: `display_tables` for a terminal,
`render_section` for the Markdown/HTML section of `cxraug report` (from a
`generator_eval.json` document; `augmentor.eval_folder.generator_section` reads the folder),
and `plot_memorization` for `memorization.png`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from classifier.tables import cell, fmt, frame_text, html_table, md_table
from manifests.files import atomic_path
from manifests.images import load_image

# ---------------------------------------------------------------- terminal

_DISPLAY = {
    "prompt_fidelity": (
        "prompt fidelity: does the oracle see the prompted finding, only it, on its side?",
        {"finding": "finding", "n_prompted": "n prompted", "n_prompts": "n prompts",
         "hit_rate": "hit", "hit_rate_ci": "hit 95% CI", "real_positive_rate": "real pos",
         "real_positive_rate_ci": "real pos 95% CI", "hit_minus_real_text": "hit - real pos",
         "n_unprompted": "n unprompted", "n_unprompted_prompts": "n prompts unprompted",
         "false_finding_rate": "false finding", "false_finding_rate_ci": "false 95% CI",
         "real_negative_rate": "real neg", "matched_negative_rate": "matched",
         "matched_negative_rate_ci": "matched 95% CI",
         "false_minus_matched_text": "false - matched", "n_sided": "n sided",
         "side_hit_rate": "side", "side_hit_rate_ci": "side 95% CI",
         "real_side_hit_rate": "real side", "real_side_hit_rate_ci": "real side 95% CI",
         "meets_targets": "meets targets"},
    ),
    "fidelity": (
        "fidelity: FID and KID against real train (lower is better; FIDs compare only at "
        "equal n), precision/recall/coverage (higher is better) and density (about 1)",
        {"subset": "subset", "n_compared": "n compared", "n_reference": "n real train",
         "fid_shown": "FID", "fid_note": "FID note", "kid_x1000": "KID x1000",
         "kid_se_x1000": "KID SE x1000", "precision": "precision", "recall": "recall",
         "density": "density", "coverage": "coverage"},
    ),
    "diversity": (
        "diversity: MS-SSIM of image pairs (lower is more diverse)",
        {"comparison": "pairs of", "label": "label", "groups": "groups", "pairs": "n pairs",
         "ms_ssim_mean": "MS-SSIM", "ms_ssim_std": "sd"},
    ),
    "alignment": (
        "prompt alignment: share the oracle calls positive",
        {"label": "label", "n_synthetic": "n syn", "synthetic_positive_rate": "synthetic",
         "real_test_positive_rate": "real pos", "real_test_negative_rate": "real neg",
         "threshold": "threshold"},
    ),
    "laterality": (
        "laterality: side hit rate (synthetic vs prompt; real held-out vs truth)",
        {"label": "label", "synthetic_side_hit_rate": "synthetic",
         "n_synthetic_sided": "n syn", "real_heldout_side_hit_rate": "real held-out",
         "n_real_heldout_sided": "n real"},
    ),
    "demographics": (
        "demographic fidelity: do the oracles see the prompted sex and age? (real test: "
        "the same oracles against the patients' own)",
        {"subgroup": "prompted subgroup", "n_sex": "n syn (sex)",
         "sex_match_ci": "sex match [95% CI]", "real_n_sex": "n real (sex)",
         "real_sex_match_ci": "real sex match [95% CI]", "n_age": "n syn (age)",
         "age_mae_ci": "age MAE, y [95% CI]", "age_bias": "age bias, y",
         "real_n_age": "n real (age)", "real_age_mae_ci": "real age MAE, y [95% CI]",
         "real_age_bias": "real age bias, y"},
    ),
}  # fmt: skip


def fid_header(extractor: str | None) -> str:
    """FID's column header, named by its features: 'FID (oracle features, 512-d)'."""
    return f"FID ({extractor})" if extractor else "FID"


def fidelity_display_rows(rows: list[dict]) -> list[dict]:
    """FID/KID rows for people: KID and its SE x1000 (KID is about 1e-3 for close sets, as
    papers print it); FID as 'too few images' where it was not computed for that reason."""
    shown = []
    for row in rows:
        kid = row.get("kid_mean")
        se = row.get("kid_se", row.get("kid_std"))  # documents before the bootstrap SE
        note = row.get("fid_note") or ""
        too_few = note.startswith("too few images")
        shown.append(
            row
            | {
                "fid_shown": "too few images" if too_few else row.get("fid"),
                "kid_x1000": None if kid is None else kid * 1000,
                "kid_se_x1000": None if se is None else se * 1000,
            }
        )
    return shown


RATES_WITH_INTERVALS = (
    "hit_rate",
    "real_positive_rate",
    "false_finding_rate",
    "real_negative_rate",
    "matched_negative_rate",
    "side_hit_rate",
    "real_side_hit_rate",
)


def _interval_text(low, high) -> str:
    """'0.73–0.89' (an en dash, as min–max elsewhere in the report), or 'n/a' where there is
    no interval (no images; a document written before intervals were)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{low:.2f}–{high:.2f}"


def _bound_text(point, bound, sign: str) -> str:
    """'-0.12 (≥ -0.25)': a difference and its one-sided 95% bound, or 'n/a'."""
    if point is None or bound is None or not (math.isfinite(point) and math.isfinite(bound)):
        return "n/a"
    return f"{point:+.2f} ({sign} {bound:+.2f})"


def with_interval_text(rows: list[dict]) -> list[dict]:
    """Prompt-fidelity rows with `<rate>_ci` text beside each rate's `_low` / `_high`, and
    the differences synthetic - real with their one-sided 95% bounds as text."""
    return [
        row
        | {
            f"{name}_ci": _interval_text(row.get(f"{name}_low"), row.get(f"{name}_high"))
            for name in RATES_WITH_INTERVALS
        }
        | {
            "hit_minus_real_text": _bound_text(
                row.get("hit_minus_real"), row.get("hit_minus_real_low"), "≥"
            ),
            "false_minus_matched_text": _bound_text(
                row.get("false_minus_matched"), row.get("false_minus_matched_high"), "≤"
            ),
        }
        for row in rows
    ]


def _estimate_text(point, low, high, digits: int) -> str:
    """'0.91 [0.84, 0.95]', the point without an interval where there is none, or 'n/a'."""
    if point is None or not math.isfinite(point):
        return "n/a"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def demographic_display_rows(rows: list[dict]) -> list[dict]:
    """Demographic fidelity rows with each figure and its interval as one text column
    (`sex_match_ci`, `age_mae_ci` and their `real_` twins); ages in years, 1 decimal."""
    out = []
    for row in rows:
        shown = dict(row)
        for prefix in ("", "real_"):
            sex = [row.get(f"{prefix}sex_match{s}") for s in ("", "_low", "_high")]
            age = [row.get(f"{prefix}age_mae{s}") for s in ("", "_low", "_high")]
            shown[f"{prefix}sex_match_ci"] = _estimate_text(*sex, digits=2)
            shown[f"{prefix}age_mae_ci"] = _estimate_text(*age, digits=1)
            bias = row.get(f"{prefix}age_bias")
            shown[f"{prefix}age_bias"] = (
                f"{bias:+.1f}" if bias is not None and math.isfinite(bias) else "n/a"
            )
        out.append(shown)
    return out


def display_tables(tables: Mapping[str, pd.DataFrame]) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) pairs for a terminal: the main columns under short headers.

    Args:
        tables: `GeneratorEval.tables` of `augmentor.evaluate.evaluate_generator`.
    """
    out = []
    for key, (title, columns) in _DISPLAY.items():
        table = tables.get(key)
        if table is not None and len(table):
            headers = dict(columns)
            if key == "fidelity":
                if "extractor" in table.columns:
                    headers["fid_shown"] = fid_header(str(table["extractor"].iloc[0]))
                table = pd.DataFrame(fidelity_display_rows(table.to_dict("records")))
            if key == "prompt_fidelity":
                table = pd.DataFrame(with_interval_text(table.to_dict("records")))
            if key == "demographics":
                table = pd.DataFrame(demographic_display_rows(table.to_dict("records")))
            out.append((title, table.reindex(columns=list(headers)).rename(columns=headers)))
    return out


# ---------------------------------------------------------------- memorization figure


def _thumbnail(path: Path, size: int = 96) -> np.ndarray:
    img = load_image(path)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def plot_memorization(table: pd.DataFrame, path: Path, n: int, overwrite: bool = True) -> int:
    """Side-by-side thumbnails: synthetic image | nearest train image (pixel space).

    Shows the flagged pairs first, then the most similar others, up to `n` pairs.
    Returns the number of pairs drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = table.sort_values(["flagged", "pixel_correlation"], ascending=False).head(n)
    per_row = 3  # pairs per figure row: synthetic | nearest train, three times
    rows = max(1, math.ceil(len(order) / per_row))
    fig, axes = plt.subplots(
        rows, 2 * per_row, figsize=(2 * 1.6 * per_row, 1.9 * rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (_, rec) in enumerate(order.iterrows()):
        r, c = divmod(k, per_row)
        left, right = axes[r][2 * c], axes[r][2 * c + 1]
        left.imshow(_thumbnail(Path(rec["image_path"])), cmap="gray", vmin=0, vmax=255)
        right.imshow(_thumbnail(Path(rec["nn_pixel_path"])), cmap="gray", vmin=0, vmax=255)
        flag = "FLAGGED " if rec["flagged"] else ""
        left.set_title(
            f"{flag}synthetic\nr={rec['pixel_correlation']:.3f} cos={rec['feature_cosine']:.3f}",
            fontsize=7,
            color="red" if rec["flagged"] else "black",
        )
        right.set_title(f"nearest train\n{rec['nn_pixel_patient']}", fontsize=7)
    fig.suptitle(
        f"memorization audit: {int(table['flagged'].sum())} of {len(table)} flagged "
        "(pairs: synthetic | nearest train image in pixel space)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return len(order)


# ---------------------------------------------------------------- report section


def _columns(key: str) -> list[str]:
    """The JSON fields the report shows for a table: the terminal's columns."""
    return list(_DISPLAY[key][1])


# Headers for people: the terminal's, and those of the tables only the report shows.
_HEADERS = {field: header for _, columns in _DISPLAY.values() for field, header in columns.items()}
_HEADERS |= {
    "image_path": "synthetic image", "target_label": "prompted for",
    "pixel_correlation": "pixel r", "feature_cosine": "feature cos",
    "nn_pixel_path": "nearest train image", "base_auroc": "base AUROC",
    "finetuned_auroc": "fine-tuned AUROC", "delta": "Δ", "delta_lo": "Δ low",
    "delta_hi": "Δ high", "relative_pct": "rel. %", "fid": "FID",
    "n_synthetic": "n synthetic", "n_real": "n real",
}  # fmt: skip


def prompt_fidelity_text(table: pd.DataFrame) -> str:
    """The prompt-fidelity table as plain text for a log, under the terminal's headers."""
    title, columns = _DISPLAY["prompt_fidelity"]
    rows = pd.DataFrame(with_interval_text(table.to_dict("records")))
    return f"{title}\n{frame_text(rows.reindex(columns=list(columns)).rename(columns=columns))}"


def _fidelity_blocks(fid: dict) -> list[tuple]:
    """FID (and KID where the document has it) against real train, named by its features."""
    if "kid" not in fid:  # written before KID was added
        return [
            ("h", "Fidelity (FID against real train; lower is better)"),
            ("table", fid["rows"], ["subset", "fid", "n_synthetic", "n_real"]),
        ]
    label = fid.get("fid_label") or "FID"
    text = (
        f"{label}: Fréchet distance of the compared images' features to those of the real "
        "train images, shown with both n. FID is biased upwards, the more the fewer the "
        "images, so FIDs compare only at equal n: the synthetic row ('all') and the real "
        "baseline row (real held-out images against the same train images) use the same "
        "number of images, the larger set subsampled with the evaluation's seed."
    )
    if "min_fid_images" in fid:
        text += (
            f" Per-label FID needs at least {fid['min_fid_images']} images on each side "
            "('too few images' otherwise)."
        )
    if fid.get("feature_dim"):
        text += (
            f" Where n is below the {fid['feature_dim']} feature dimensions the covariances "
            "are singular and FID is biased upwards (the FID note says so)."
        )
    kid_text = (
        f"KID: unbiased polynomial-kernel MMD, averaged over {fid['kid_subsets']} subsets of "
        f"at most {fid['kid_subset_size']} images, shown x1000"
    )
    kid_text += (
        ", with its bootstrap standard error (each replicate redraws both sets)."
        if "kid_se" in fid
        else " (sd over subsets)."
    )
    columns = _columns("fidelity") if "kid_se" in fid else ["subset", "fid", "kid_x1000",
                                                            "kid_se_x1000", "n_synthetic",
                                                            "n_real"]  # fmt: skip
    blocks = [
        ("h", f"Fidelity: {label} and KID against real train, lower is better"),
        ("p", text),
        ("p", kid_text),
    ]
    prdc = ("precision", "recall", "density", "coverage")
    if fid["rows"] and "precision" in fid["rows"][0]:
        k = fid["rows"][0].get("prdc_k")
        blocks.append(("p", f"Precision, recall, density, coverage (Naeem et al. 2020, k = {k}) "
                       "on the same features against the same real images: precision and "
                       "density say the synthetic images lie where real ones do, recall and "
                       "coverage that they reach the real variety. For one distribution all are "
                       "about 1 (coverage about 0.97); density above 1 means synthetic images "
                       "crowd dense real regions. They too depend on n."))  # fmt: skip
    else:  # a document written before PRDC was measured
        columns = [c for c in columns if c not in prdc]
    return blocks + [("table", fidelity_display_rows(fid["rows"]), columns, {"fid_shown": label})]


def _prompt_fidelity_blocks(doc: dict) -> list[tuple]:
    fidelity = doc.get("prompt_fidelity")
    if not fidelity:
        return []
    t = fidelity["targets"]
    rows = with_interval_text(fidelity["rows"])
    met = sum(bool(r["meets_targets"]) for r in rows)
    source = fidelity.get("threshold_source")
    intervals = fidelity.get(
        "interval_method", "95% CI: Wilson interval of each rate (a miss inside it may be noise)"
    )
    return [
        ("h", "Prompt fidelity"),
        (
            "p",
            f"Oracle {doc['oracle']}, per finding: hit = share of images prompted for it that "
            "the oracle calls positive (real pos: its rate on real test positives); false "
            "finding = share of images whose prompt negates or does not mention it that the "
            "oracle calls positive (real neg: its rate on real test negatives; matched: "
            "the same with the real negatives grouped by which other findings they show, "
            "each group weighted by the share of those images whose prompts state the same, "
            "since the oracle reads some findings into others); side = share "
            "of sided prompts whose side the side detector finds (real side: on real "
            f"held-out images). Targets, judged on the point rates: hit >= "
            f"{t['hit_vs_real_positive']:g} x real pos, false finding <= matched real neg + "
            f"{t['false_finding_margin']:g}, side >= {t['side_hit_rate']:g}; met by {met} of "
            f"{len(rows)} findings.",
        ),
        (
            "p",
            (
                f"Thresholds (Youden's J) and the side detector come from {source}. "
                if source
                else ""
            )
            + intervals
            + ". 'hit - real pos' and 'false - matched' give the "
            "difference with its one-sided 95% bound; 'n prompts' counts distinct prompts.",
        ),  # fmt: skip
        ("table", rows, _columns("prompt_fidelity")),
    ]


def _demographic_blocks(audit: dict | None) -> list[tuple]:
    """The demographic fidelity section (`evaluate-generator --demographics`), if run."""
    if not audit:
        return []
    oracle = audit.get("oracle") or {}
    settings = oracle.get("settings") or {}
    groups = ", ".join(audit.get("age_groups", []))
    text = (
        f"Sex and age oracles ({settings.get('backbone', 'n/a')} at "
        f"{settings.get('image_size', 'n/a')} px, trained on "
        f"{oracle.get('n_train_images', 'n/a')} real train images of "
        f"{oracle.get('n_train_patients', 'n/a')} patients) look at every synthetic image. "
        "Per prompted subgroup (the sex and age its prompt stated; age groups "
        f"{groups}): the share whose predicted sex (female probability >= "
        f"{audit.get('sex_threshold', 0.5):g}) is the prompt's, and the mean absolute "
        "error of the predicted age in years with its mean signed error (bias; positive: "
        "the images look older than prompted). The real columns are the baseline: the same "
        "oracles on real test images against the patients' own sex and age. "
        f"{audit.get('n_sex_stated', 0)} of {audit.get('n_synthetic', 0)} synthetic images "
        f"state a sex, {audit.get('n_age_stated', 0)} an age. "
        f"{audit.get('interval_method', '')}."
    )
    columns = list(_DISPLAY["demographics"][1])
    blocks: list[tuple] = [
        ("h", "Demographic fidelity"),
        ("p", text),
        ("table", demographic_display_rows(audit["rows"]), columns),
    ]
    return blocks + [("p", f"Note: {note}") for note in audit.get("notes", [])]


def _section_blocks(doc: dict, probe: dict | None) -> list[tuple]:
    """The report as ('h', text) / ('p', text) / ('table', rows, columns[, headers])
    blocks."""
    n_real = doc["n_real"]
    blocks: list[tuple] = [
        ("h", "Generator evaluation"),
        (
            "p",
            f"Features: {doc['feature_extractor']['name']}; {doc['n_synthetic']} synthetic "
            f"images; real train/val/test {n_real['train']}/{n_real['val']}/{n_real['test']}.",
        ),
    ]
    blocks += _prompt_fidelity_blocks(doc)
    blocks += _fidelity_blocks(doc["fidelity"])
    div = doc["diversity"]
    blocks += [
        ("h", f"Diversity ({div['metric']}; {div['image_size']} px, {div['scales']} scales)"),
        ("table", div["rows"], _columns("diversity")),
    ]
    if doc.get("alignment"):
        blocks += [
            ("h", "Prompt alignment"),
            ("p", f"Oracle {doc['oracle']}; threshold: {doc['alignment']['threshold_rule']}."),
            ("table", doc["alignment"]["rows"], _columns("alignment")),
        ]
    if doc.get("laterality"):
        blocks += [
            ("h", "Laterality"),
            ("p", f"Method: {doc['laterality']['method']}."),
            ("table", doc["laterality"]["rows"], _columns("laterality")),
        ]
    memo = doc["memorization"]
    base = memo.get("real_heldout_baseline") or {}
    blocks += [
        ("h", "Memorization audit"),
        (
            "p",
            f"{memo['n_flagged']} of {memo['n_synthetic']} synthetic images flagged "
            f"({memo['n_exact_copies']} exact copies; pixel correlation >= "
            f"{memo['pixel_threshold']} or feature cosine >= {memo['feature_threshold']}); "
            f"max pixel correlation {fmt(memo['pixel_correlation_max'])}, max feature cosine "
            f"{fmt(memo['feature_cosine_max'])}. Share of held-out real images flagged at the "
            f"same thresholds: {fmt(base.get('flagged_share'))}. "
            f"Thumbnails: {memo['figure']}.",
        ),
    ]
    if memo["flagged"]:
        blocks.append(
            (
                "table",
                memo["flagged"],
                [
                    "image_path",
                    "target_label",
                    "pixel_correlation",
                    "feature_cosine",
                    "nn_pixel_path",
                ],
            )
        )
    audit = doc.get("privacy")
    if audit:
        tmr = audit.get("val_true_match_rate")
        blocks += [
            ("h", "Re-identification audit"),
            (
                "p",
                f"A patient-verification model trained on real train pairs scores each "
                f"synthetic image against the patient whose report prompted it and against "
                f"its nearest train patient; a match is a score above {fmt(audit['threshold'])}, "
                f"the threshold at a false-match rate of {audit['false_match_rate']:g} on real "
                f"val pairs (true-match rate on val patients: {fmt(tmr)}). The real rows are "
                "the baseline: real val images, whose patients are not in train, scored the "
                "same way. A low share says the model found no link at its power, not that "
                "none exists.",
            ),
            (
                "table",
                audit["rows"],
                [
                    "comparison",
                    "group",
                    "n",
                    "n_above",
                    "share_above",
                    "share_low",
                    "share_high",
                    "mean_score",
                    "max_score",
                ],
            ),  # fmt: skip
        ]
    blocks += _demographic_blocks(doc.get("demographics"))
    if probe:
        blocks += [
            ("h", "Text encoder probe (held-out reports, linear probe AUROC)"),
            (
                "table",
                probe["rows"],
                [
                    "label",
                    "base_auroc",
                    "finetuned_auroc",
                    "delta",
                    "delta_lo",
                    "delta_hi",
                    "relative_pct",
                ],
            ),
        ]
        blocks += [("p", f"Probe note: {note}") for note in probe.get("notes", [])]
    for note in doc.get("notes", []):
        blocks.append(("p", f"Note: {note}"))
    return blocks


def _md(rows: list[dict], columns: list[str], named: dict | None = None) -> str:
    if not rows:
        return "_none_\n"
    headers = [(named or {}).get(c) or _HEADERS.get(c, c) for c in columns]
    return md_table(headers, [[cell(r.get(c)) for c in columns] for r in rows])


def _html(rows: list[dict], columns: list[str], named: dict | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    headers = [(named or {}).get(c) or _HEADERS.get(c, c) for c in columns]
    return html_table(headers, [[cell(r.get(c)) for c in columns] for r in rows])


def render_section(
    doc: dict, probe: dict | None, figure: bytes | None, samples: bytes | None = None
) -> dict[str, str]:
    """A `generator_eval.json` document as report fragments: {'md': ..., 'html': ...}.

    Args:
        doc: the document `augmentor.evaluate.evaluate_generator` wrote.
        probe: a `text_encoder_probe.json` document shown with it, if any.
        figure: `memorization.png` bytes, embedded in the HTML when given.
        samples: the real-beside-synthetic grid (PNG bytes), embedded when given.
    """
    md, html = [], ["<section class='generator-eval'>"]
    first = True
    for block in _section_blocks(doc, probe):
        if block[0] == "h":
            md.append(("## " if first else "### ") + block[1] + "\n\n")
            html.append(f"<h2>{escape(block[1])}</h2>" if first else f"<h3>{escape(block[1])}</h3>")
            first = False
        elif block[0] == "p":
            md.append(block[1] + "\n\n")
            html.append(f"<p>{escape(block[1])}</p>")
        else:
            named = block[3] if len(block) > 3 else None  # headers of this table only
            md.append(_md(block[1], block[2], named) + "\n")
            html.append(_html(block[1], block[2], named))
    if samples is not None:
        title = "Real beside synthetic, per prompted finding and side"
        md.append(f"### {title}\n\nSee `{doc.get('samples', {}).get('figure', '')}` in the "
                  "generator evaluation folder.\n\n")  # fmt: skip
        data = base64.b64encode(samples).decode()
        html.append(f"<h3>{escape(title)}</h3>")
        html.append(f"<img class='grid' alt='{escape(title)}' src='data:image/png;base64,{data}'/>")
    if figure is not None:
        data = base64.b64encode(figure).decode()
        html.append(f"<img alt='memorization audit' src='data:image/png;base64,{data}'/>")
    html.append("</section>")
    return {"md": "".join(md), "html": "".join(html)}


# ---------------------------------------------------------------- real beside synthetic


def sample_rows(
    real, synthetic, per_side: int = 4, seed: int = 0
) -> list[tuple[str, list[Path], list[Path]]]:
    """Per prompted finding (and stated side for lateral ones): real train images showing it
    and synthetic images prompted with it, `per_side` of each, drawn with `seed`.

    Args:
        real: the real manifest (its real train rows with the finding positive are shown).
        synthetic: the synthetic manifest (rows grouped by `target_label` and prompt side).
    """
    from augmentor.report_text import LATERAL_LABELS, stated_side

    rng = np.random.default_rng(seed)
    rrows = real.rows.assign(_path=[str(p) for p in real.image_paths()])
    rrows = rrows[(rrows["source"] == "real") & (rrows["split"] == "train")]
    srows = synthetic.rows.assign(_path=[str(p) for p in synthetic.image_paths()])
    if "target_label" not in srows:
        return []
    out = []
    targets = [t for t in dict.fromkeys(srows["target_label"].dropna()) if t in real.labels]
    for label in targets:
        sides = ("right", "left") if label in LATERAL_LABELS else (None,)
        for side in sides:
            r = rrows[rrows[label] == 1]
            s = srows[srows["target_label"] == label]
            if side is not None:
                # Boolean arrays: an empty list would select no columns, not no rows.
                r = r[np.array([stated_side(t, label) == side for t in r["report"]], dtype=bool)]
                s = s[np.array([stated_side(t, label) == side for t in s["prompt"]], dtype=bool)]
            if len(s):
                title = label if side is None else f"{label}, {side}"
                out.append((title, _pick(r, rng, per_side), _pick(s, rng, per_side)))
    return out


def _pick(rows: pd.DataFrame, rng: np.random.Generator, k: int) -> list[Path]:
    """Up to `k` of `rows`' image paths, in random order."""
    return [Path(p) for p in rows["_path"].to_numpy()[rng.permutation(len(rows))[:k]]]


def plot_samples(rows: list[tuple[str, list[Path], list[Path]]], path: Path, per_side: int = 4):
    """Save `rows` (from `sample_rows`) as one PNG: real images left, synthetic right."""

    from classifier.report_render import grid_figure

    cols = 2 * per_side + 1
    cells = [
        (title, [*real[:per_side], *[None] * (per_side - len(real[:per_side])), None,
                 *syn[:per_side]])
        for title, real, syn in rows
    ]  # fmt: skip
    fig = grid_figure(cells, (1.25 * cols + 1.8, 1.3 * len(rows) + 0.5), cols)
    fig.axes[0].set_title("real (train)", fontsize=9, loc="left")
    fig.axes[per_side + 1].set_title("synthetic (prompted)", fontsize=9, loc="left")
    fig.text(0.01, 0.005, "sides are the patient's (PA view: patient's right on image left)",
             fontsize=7)  # fmt: skip
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
