"""Data efficiency: AUROC against real training size per arm, what synthetic data is worth in
real images, and what share of the full real set's gain a mixed arm recovers.

A study with `real_sizes` trains the real-only, mixed and step-matched arms on nested,
patient-level subsets of the real train split (arm names `real-n80`, `mix0.5-n80`, ...).
This module reads those arms from a `Report` (`Report.arm_info`: each arm's recorded real
size, `classifier.arms`): one curve per arm family (`Arm.family`, the arm name without its
size).

* **Worth in real images** (:func:`synthetic_worth`), per mixed family at its smallest
  real size: the real size at which the real-only curve reaches the mixed arm's AUROC, the
  curve interpolated linearly in log n between measured sizes (AUROC grows roughly with
  log n, so linear-in-n interpolation would undervalue every point between two sizes).
  The same is given for the arm's step-matched control and, if present, its
  positives-matched control: only the worth beyond theirs is owed to the synthetic images.
  Each has a percentile interval: the crossing recomputed in every joint bootstrap resample
  (`Report.draws`: the same resampled test patients for every arm, each arm's seeds or
  generators drawn again with replacement), so the real curve's uncertainty counts as
  much as the mixed arm's. A crossing past the largest measured size is "beyond the
  largest size", never a number, and the resamples where it is are counted.
* **Share of the full-data gain** (:func:`full_gain_share`), per sized mixed arm with the
  real-only arm of its size and the full real arm:
  ``(AUROC_mixed,n - AUROC_real,n) / (AUROC_real,full - AUROC_real,n)``, with its
  interval from the same resamples (resamples where the full real set does not beat the
  small one have no share and are counted). When the arm's generator saw more real images
  than its classifier, the share is a transfer: what those images, through the generator,
  give a classifier that saw fewer (`classifier.budget`).
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
CI_LEVEL = 0.95
BEYOND = "beyond the largest size"  # report.json's word for a crossing past every size


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
    """The first real size at which the curve, linear in log n between measured sizes,
    reaches `target`.

    `sizes[0]` when the curve already starts at or above it, inf when it never reaches it
    (beyond the largest size), NaN when the target or a point of the curve is undefined.
    """
    if not np.isfinite(target) or not np.isfinite(aurocs).all():
        return math.nan
    if aurocs[0] >= target:
        return float(sizes[0])
    logs = np.log(sizes)
    for i in range(len(sizes) - 1):
        a0, a1 = aurocs[i], aurocs[i + 1]
        if a1 >= target > a0:
            return float(math.exp(logs[i] + (target - a0) / (a1 - a0) * (logs[i + 1] - logs[i])))
    return math.inf


def report_draws(report, label: str = MACRO) -> dict[str, np.ndarray]:
    """{arm: ``(n_boot,)`` its mean AUROC on `label` in each joint resample} from
    `Report.draws`; empty for a report read back from report.json (none kept)."""
    draws = getattr(report, "draws", None) or {}
    names = [*report.labels, MACRO]
    if label not in names:
        return {}
    k = names.index(label)
    return {arm: np.asarray(d)[:, k] for arm, d in draws.items()}


def _interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float, int, int]:
    """Percentile interval of crossings (inf: beyond the largest size, kept as the largest
    values), the resamples with one, and how many of those are beyond."""
    valid = samples[~np.isnan(samples)]
    if valid.size == 0:
        return math.nan, math.nan, 0, 0
    alpha = (1.0 - level) / 2.0
    # Order statistics, not interpolation: a quantile between a size and inf is inf.
    lo, hi = np.quantile(valid, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi), int(valid.size), int(np.isinf(valid).sum())


def _equivalent(
    sizes: np.ndarray,
    curve: np.ndarray,
    curve_draws: np.ndarray | None,
    target: float,
    target_draws: np.ndarray | None,
    prefix: str,
) -> dict:
    """`prefix`: the crossing of the target's AUROC, and, with draws, its interval, the
    resamples that gave one and those beyond the largest size."""
    out = {prefix: _crossing(sizes, curve, target)}
    lo = hi = math.nan
    n_valid = n_beyond = 0
    if curve_draws is not None and target_draws is not None:
        samples = np.array(
            [_crossing(sizes, curve_draws[b], target_draws[b]) for b in range(len(target_draws))]
        )
        lo, hi, n_valid, n_beyond = _interval(samples)
    out.update(
        {
            f"{prefix}_lo": lo,
            f"{prefix}_hi": hi,
            f"{prefix}_n_resamples": n_valid,
            f"{prefix}_n_beyond": n_beyond,
        }
    )
    return out


def synthetic_worth(
    table: pd.DataFrame,
    draws: dict[str, np.ndarray] | None = None,
    label: str = MACRO,
    real: str = REAL.name,
) -> list[dict]:
    """Per mixed family, at its smallest real size: the real images the mixed arm, its
    step-matched control and its positives-matched control (where present) are each
    worth, with intervals from `draws` (:func:`report_draws`; without them, none)."""
    out = []
    base = table[(table["family"] == real) & (table["label"] == label)].sort_values("n_real")
    if len(base) < 2:
        return out
    sizes, aurocs = base["n_real"].to_numpy(float), base["auroc_mean"].to_numpy(float)
    draws = draws or {}
    curve_draws = (
        np.stack([draws[a] for a in base["arm"]], axis=1)
        if all(a in draws for a in base["arm"])
        else None
    )
    for family in sorted(set(table["family"]) - {real}):
        arm = Arm.parse(family)
        if arm.kind != MIX:
            continue
        rows = table[(table["family"] == family) & (table["label"] == label)]
        if rows.empty:
            continue
        first = rows.sort_values("n_real").iloc[0]
        n0 = float(first["n_real"])
        record = {
            "family": family,
            "arm": str(first["arm"]),
            "label": label,
            "n_real": n0,
            "auroc": float(first["auroc_mean"]),
            "auroc_lo": float(first["auroc_lo"]),
            "auroc_hi": float(first["auroc_hi"]),
        }
        record.update(
            _equivalent(
                sizes,
                aurocs,
                curve_draws,
                record["auroc"],
                draws.get(record["arm"]),
                "real_equivalent",
            )
        )
        for name, control in (("control", arm.control()), ("oversample", arm.control(True))):
            match = table[
                (table["family"] == control.name)
                & (table["label"] == label)
                & (table["n_real"] == n0)
            ]
            if match.empty:
                record[f"{name}_arm"] = None
                record[f"{name}_auroc"] = math.nan
                record[f"{name}_equivalent"] = math.nan
                continue
            row = match.iloc[0]
            record[f"{name}_arm"] = str(row["arm"])
            record[f"{name}_auroc"] = float(row["auroc_mean"])
            record.update(
                _equivalent(
                    sizes,
                    aurocs,
                    curve_draws,
                    record[f"{name}_auroc"],
                    draws.get(str(row["arm"])),
                    f"{name}_equivalent",
                )
            )
        record["largest_real_size"] = float(sizes[-1])
        record["real_sizes"] = [float(x) for x in sizes]
        out.append(record)
    return out


def _n(value: float) -> str:
    if math.isinf(value):
        return BEYOND
    return "n/a" if not math.isfinite(value) else f"{value:.0f}"


def _equivalent_text(worth: dict, prefix: str) -> str:
    """'about N real images [lo, hi]' (or beyond), with the resamples beyond."""
    eq, big = worth[prefix], worth["largest_real_size"]
    if math.isinf(eq):
        text = f"real images {BEYOND} ({big:.0f})"
    elif math.isfinite(eq) and eq <= worth["n_real"]:
        text = f"no more than its own {worth['n_real']:.0f} real images"
    else:
        text = f"about {_n(eq)} real images"
    lo, hi = worth.get(f"{prefix}_lo", math.nan), worth.get(f"{prefix}_hi", math.nan)
    n = worth.get(f"{prefix}_n_resamples", 0)
    if n:
        text += f" [{_n(lo)}, {_n(hi)}]"
        beyond = worth.get(f"{prefix}_n_beyond", 0)
        if beyond:
            text += f", {BEYOND} in {beyond} of {n} resamples"
    else:
        text += " (no interval: the report's resamples are not kept)"
    return text


def worth_text(worth: dict) -> str:
    """One paragraph per mixed family for the report."""
    eq = worth["real_equivalent"]
    head = (
        f"At {worth['n_real']:.0f} real train images, {worth['family']} reaches "
        f"{worth['label']} AUROC {worth['auroc']:.3f} [{worth['auroc_lo']:.3f}, "
        f"{worth['auroc_hi']:.3f}]"
    )
    if math.isfinite(eq) and eq <= worth["n_real"]:
        text = head + (
            "; real-only training already does as well there: the synthetic data is worth "
            f"no extra real images at this size ({_equivalent_text(worth, 'real_equivalent')})."
        )
    elif math.isinf(eq):
        text = head + (
            ", which real-only training does not reach within the measured sizes: "
            f"{_equivalent_text(worth, 'real_equivalent')}."
        )
    else:
        text = head + (
            f", which real-only training reaches at {_equivalent_text(worth, 'real_equivalent')}."
        )
    text += (
        " The real-only curve is interpolated linearly in log n between measured sizes; each "
        "interval is the 2.5-97.5 percentiles of the crossing recomputed in every joint "
        "resample of test patients and of each arm's seeds (or generators), so the real "
        "curve's uncertainty is in it; a crossing past the largest size is counted as "
        f"{BEYOND}, not extrapolated. Real-only arms at larger sizes also train for more "
        "optimizer steps."
    )
    if len(worth.get("real_sizes", [])) == 2:
        text += (
            " Only two real sizes were measured: the curve between them is a straight line "
            "in log n, an assumption, not a measurement."
        )
    for name, what in (
        ("control", "step-matched control (the same real images, as many optimizer steps, "
                    "no synthetic image)"),
        ("oversample", "positives-matched control (also its real positives drawn to the "
                       "arm's label balance)"),
    ):  # fmt: skip
        auroc = worth.get(f"{name}_auroc", math.nan)
        if math.isfinite(auroc):
            text += (
                f" Its {what} reaches {auroc:.3f}, what "
                f"{_equivalent_text(worth, f'{name}_equivalent')} give."
            )
    if any(math.isfinite(worth.get(f"{n}_auroc", math.nan)) for n in ("control", "oversample")):
        text += " Only the part of the worth beyond the controls' is owed to the synthetic images."
    return text


def full_gain_share(report, label: str = MACRO) -> list[dict]:
    """Per sized mixed arm whose real-only arm of the same size and the full real arm are in
    the report: the share of the full real set's gain it recovers (see the module
    docstring), with its percentile interval from the report's joint resamples, and what
    its generator and classifier saw (`Report.per_arm`, `classifier.budget`)."""
    info: dict[str, Arm] = report.arm_info
    table = report.table[report.table["label"] == label].set_index("arm")
    draws = report_draws(report, label)
    full = REAL.name
    out = []
    for arm in report.arms:
        facts = info[arm]
        if facts.kind != MIX or facts.real_size is None:
            continue
        small = REAL.at_size(facts.real_size).name
        if small not in report.arms or full not in report.arms or arm not in table.index:
            continue
        m, r, f = (float(table.loc[a, "auroc_mean"]) for a in (arm, small, full))
        share = (m - r) / (f - r) if f > r else math.nan
        lo = hi = math.nan
        n_valid = n_no_gain = 0
        if all(a in draws for a in (arm, small, full)):
            gain = draws[full] - draws[small]
            ok = np.isfinite(gain) & np.isfinite(draws[arm])
            n_no_gain = int((ok & (gain <= 0)).sum())
            ok &= gain > 0
            n_valid = int(ok.sum())
            if n_valid:
                samples = (draws[arm][ok] - draws[small][ok]) / gain[ok]
                alpha = (1.0 - CI_LEVEL) / 2.0
                lo, hi = (float(q) for q in np.quantile(samples, [alpha, 1.0 - alpha]))
        saw = _saw(report, arm)
        out.append(
            {
                "arm": arm,
                "label": label,
                "real_arm": small,
                "full_arm": full,
                "auroc": m,
                "real_auroc": r,
                "full_auroc": f,
                "share": share,
                "share_lo": lo,
                "share_hi": hi,
                "n_resamples": n_valid,
                "n_no_gain": n_no_gain,
                **saw,
            }
        )
    return out


def _saw(report, arm: str) -> dict:
    """The most real images the arm's generator and its classifier saw, over its runs
    (None: not known), and whether the generator saw more (the transfer framing)."""
    info = (getattr(report, "per_arm", {}).get(arm) or {}).get("information") or {}

    def most(field: str) -> int | None:
        known = [v for v in info.get(field) or [] if v is not None]
        return max(known) if known else None

    generator, classifier = most("generator_real_images"), most("classifier_real_train_images")
    transfer = generator is not None and classifier is not None and generator > classifier
    return {
        "generator_real_images": generator,
        "classifier_real_images": classifier,
        "transfer": transfer,
    }


def share_text(share: dict) -> str:
    """One sentence per sized mixed arm for the report."""
    pct = int(round(CI_LEVEL * 100))
    if not math.isfinite(share["share"]):
        text = (
            f"{share['arm']}: no share of the full-data gain ({share['full_arm']} does not beat "
            f"{share['real_arm']} on {share['label']} AUROC: there is no gain to share)."
        )
    else:
        text = (
            f"{share['arm']} recovers {100 * share['share']:.0f}% of the {share['label']} AUROC "
            f"gain from {share['real_arm']} ({share['real_auroc']:.3f}) to {share['full_arm']} "
            f"({share['full_auroc']:.3f})"
        )
        if share["n_resamples"]:
            text += (
                f" [{100 * share['share_lo']:.0f}%, {100 * share['share_hi']:.0f}%] ({pct}% "
                f"percentile interval of {share['n_resamples']} joint resamples"
            )
            if share["n_no_gain"]:
                text += (
                    f"; {share['n_no_gain']} more had no gain from the full set, so no share, "
                    "and were left out"
                )
            text += ")."
        else:
            text += " (no interval: the report's resamples are not kept)."
    if share["transfer"]:
        text += (
            f" Its generator was fine-tuned on {share['generator_real_images']} real images "
            f"with their reports, its classifier trained on {share['classifier_real_images']}: "
            "the share measures how much of those images' value the generator transfers to a "
            "classifier that saw fewer labelled images, not what synthetic images add to a "
            "study that has only the small real set."
        )
    return text


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
