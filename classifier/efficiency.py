"""Data efficiency: AUROC against real training size per arm, and what synthetic data is worth.

A study with `real_sizes` trains the real-only, mixed and step-matched arms on nested,
patient-level subsets of the real train split (arm names `real-n80`, `mix0.5-n80`, ...).
This module reads those arms from a `Report` (`Report.arm_info`: each arm's recorded real
size, `classifier.arms`): one curve per arm family (`Arm.family`, the arm name without its
size), and, at the smallest size, how many real images the synthetic data is
worth: the real size at which the real-only curve reaches the mixed arm's AUROC, by linear
interpolation between measured sizes. Its interval is the same interpolation of the mixed
arm's 95% CI ends (the real curve's own uncertainty is not propagated; said in the text).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd

from classifier.arms import MIX, Arm

MACRO = "macro"
REAL = Arm()  # the real-only arm: its curve is what the others are read against


def efficiency_table(report) -> pd.DataFrame:
    """Rows (family, arm, n_real, label, auroc_mean, auroc_lo, auroc_hi) for arm families
    measured at more than one real size, and, when the real arm is, for families measured
    at a smaller real size only; empty when the study has no size sweep."""
    info: dict[str, Arm] = report.arm_info
    families: dict[str, list[str]] = {}
    for arm in report.arms:
        families.setdefault(info[arm].family, []).append(arm)
    # Arm families measured at several sizes; with a swept real arm, also a family measured
    # at one smaller size only (e.g. mixed arms only at the small size): a point to compare.
    real_swept = len(families.get(REAL.family, [])) > 1
    swept = {
        f: arms
        for f, arms in families.items()
        if len(arms) > 1 or (real_swept and any(info[a].real_size is not None for a in arms))
    }

    def real_images(arm: str) -> float:
        # Distinct real images: the real-only arm of the same size (a step-matched control
        # repeats its real images, so its own count would double them).
        runs = report.runs[report.runs["arm"] == REAL.at_size(info[arm].real_size).name]
        if runs.empty:
            runs = report.runs[report.runs["arm"] == arm]
        return float(pd.to_numeric(runs["n_real_train"], errors="coerce").mean())

    rows = []
    for family, arms in swept.items():
        for arm in arms:
            n_real = real_images(arm)
            for r in report.table[report.table["arm"] == arm].itertuples(index=False):
                rows.append(
                    {
                        "family": family,
                        "arm": arm,
                        "n_real": n_real,
                        "label": r.label,
                        "auroc_mean": r.auroc_mean,
                        "auroc_lo": r.auroc_lo,
                        "auroc_hi": r.auroc_hi,
                    }
                )
    columns = ["family", "arm", "n_real", "label", "auroc_mean", "auroc_lo", "auroc_hi"]
    return pd.DataFrame(rows, columns=columns).sort_values(["family", "label", "n_real"])


def _crossing(sizes: np.ndarray, aurocs: np.ndarray, target: float) -> float:
    """The first real size at which the piecewise-linear curve reaches `target`.

    `sizes[0]` when the curve already starts at or above it, inf when it never reaches it.
    """
    if not np.isfinite(target):
        return math.nan
    if aurocs[0] >= target:
        return float(sizes[0])
    for (n0, a0), (n1, a1) in zip(
        zip(sizes[:-1], aurocs[:-1], strict=True),
        zip(sizes[1:], aurocs[1:], strict=True),
        strict=True,
    ):
        if a1 >= target > a0:
            return float(n0 + (target - a0) / (a1 - a0) * (n1 - n0))
    return math.inf


def synthetic_worth(table: pd.DataFrame, label: str = MACRO, real: str = REAL.name) -> list[dict]:
    """Per mixed family, at the smallest real size: real images the synthetic data is worth."""
    out = []
    base = table[(table["family"] == real) & (table["label"] == label)].sort_values("n_real")
    if len(base) < 2:
        return out
    sizes, aurocs = base["n_real"].to_numpy(float), base["auroc_mean"].to_numpy(float)
    for family in sorted(set(table["family"]) - {real}):
        arm = Arm.parse(family)
        if arm.kind != MIX:
            continue
        rows = table[(table["family"] == family) & (table["label"] == label)]
        if rows.empty:
            continue
        first = rows.sort_values("n_real").iloc[0]
        n0 = float(first["n_real"])
        equal = [_crossing(sizes, aurocs, float(first[k])) for k in ("auroc_mean", "auroc_lo",
                                                                        "auroc_hi")]  # fmt: skip
        control = table[
            (table["family"] == arm.control().name)
            & (table["label"] == label)
            & (table["n_real"] == n0)
        ]
        control_auroc = float(control["auroc_mean"].iloc[0]) if len(control) else math.nan
        out.append(
            {
                "family": family,
                "label": label,
                "n_real": n0,
                "control_auroc": control_auroc,
                "control_equivalent": _crossing(sizes, aurocs, control_auroc),
                "auroc": float(first["auroc_mean"]),
                "auroc_lo": float(first["auroc_lo"]),
                "auroc_hi": float(first["auroc_hi"]),
                "real_equivalent": equal[0],
                "real_equivalent_lo": equal[1],
                "real_equivalent_hi": equal[2],
                "largest_real_size": float(sizes[-1]),
            }
        )
    return out


def _n(value: float, largest: float) -> str:
    if math.isinf(value):
        return f"> {largest:.0f}"
    return "n/a" if not math.isfinite(value) else f"{value:.0f}"


def worth_text(worth: dict) -> str:
    """One sentence per mixed family for the report."""
    eq = worth["real_equivalent"]
    big = worth["largest_real_size"]
    head = (
        f"At {worth['n_real']:.0f} real train images, {worth['family']} reaches "
        f"{worth['label']} AUROC {worth['auroc']:.3f} [{worth['auroc_lo']:.3f}, "
        f"{worth['auroc_hi']:.3f}]"
    )
    control = worth.get("control_auroc", math.nan)
    tail = (
        ""
        if not math.isfinite(control)
        else f" Its step-matched control (the same real images, as many optimizer steps, no "
        f"synthetic image) reaches {control:.3f}, what about "
        f"{_n(worth['control_equivalent'], big)} real images give: only the part of the "
        "worth beyond the control's is owed to the synthetic images."
    )
    if math.isfinite(eq) and eq <= worth["n_real"]:
        return (
            head + "; real-only training already does as well there: the synthetic data is "
            "worth no extra real images at this size." + tail
        )
    return (
        head + f", which real-only training reaches at about {_n(eq, big)} real images "
        f"[{_n(worth['real_equivalent_lo'], big)}, {_n(worth['real_equivalent_hi'], big)}] "
        "(linear interpolation between measured sizes; interval from the mixed arm's 95% CI, "
        "the real curve's own uncertainty not included)." + tail
    )


def efficiency_figure(table: pd.DataFrame) -> str | None:
    """Base64 PNG: AUROC against real train images per arm family, 95% CI bands, one panel
    per label and the macro."""
    if table.empty:
        return None
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(table["label"]))
    fig = Figure(figsize=(3.2 * len(labels), 3.0))
    for i, label in enumerate(labels):
        ax = fig.add_subplot(1, len(labels), i + 1)
        part = table[table["label"] == label]
        for family, rows in part.groupby("family", sort=True):
            rows = rows.sort_values("n_real")
            x = rows["n_real"].to_numpy(float)
            mean, lo, hi = (rows[k].to_numpy(float) for k in ("auroc_mean", "auroc_lo", "auroc_hi"))
            if len(x) == 1:  # one size: the point and its CI as an error bar
                ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="o", capsize=3, label=family)
                continue
            ax.plot(x, mean, marker="o", label=family)
            ax.fill_between(x, lo, hi, alpha=0.15)
        ax.set_xscale("log")
        sizes = sorted(set(part["n_real"].round().astype(int)))
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("real train images", fontsize=8)
        if i == 0:
            ax.set_ylabel("AUROC (95% CI)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()
