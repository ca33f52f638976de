"""Coverage of the report's 95% intervals, by simulating studies whose truth is known.

    python benchmarks/coverage.py [--studies 400] [--n-boot 200] [--seed 0]
        [--scenario NAME ...] [--path fast|report]

Each simulated study is a small version of a real one: a test set of patients with several
images each, two arms (`real`, `mix0.5`) of several training seeds, three labels. A run's
score for an image is binormal: ``y * d + patient effect + image effect + run noise`` with
unit variance within each class, so a run whose separation is `d` has population AUROC
``Phi(d / sqrt(2))``. The patient and image effects are shared by every run (what makes one
patient or image hard for every model: the images of a patient are correlated, and the two
arms are correlated on the same images); the run noise is each run's own. A training seed
moves a run's separation by ``N(0, seed_sd^2)`` (half of it shared by the labels), so the
expected AUROC over seeds of an arm with separation `d` is ``Phi(d / sqrt(2 + seed_sd^2))``:
the truth, per label, macro (the mean over labels) and delta (mix0.5 minus real).

A scenario with generators (`n_generators` > 0) fits that many generators for the mixed arm
and trains `n_seeds` classifier seeds on each: a generator moves its runs' separation by
``N(0, generator_sd^2)`` (again half shared by the labels), so the mixed arm's truth is
``Phi(d / sqrt(2 + seed_sd^2 + generator_sd^2))``, the expectation over generators and
seeds, and the report's interval has generators as its units
(`classifier.stats.unit_means`); the delta against real (no generator) is two terms. The
ceiling scenarios put every label's AUROC at 0.98-0.995, the rare-label ones one label's
prevalence at 5% (about 5 positive patients of 100).

Every study is summarised by the report's own statistics (`classifier.report`), and the
table counts how often each 95% interval covered the truth, with the Clopper-Pearson 95%
interval of that coverage. `--path report` runs `summarize_arms` on each study, exactly
as `cxraug report`; the default `fast` path calls the same interval functions
(`arm_interval`, `delta_interval`, the fixed-label macro, the patient resampling) on the
same numbers but takes the point AUROC from the bootstrap's weighted Mann-Whitney statistic
with unit weights (equal to scikit-learn's, see tests/test_classifier.py) and skips the ROC
curves and tables, about 5x faster; tests/test_calibration.py checks the two paths agree.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, norm

from classifier.report import (
    MACRO,
    _ArmData,
    _with_macro,
    arm_interval,
    delta_interval,
    summarize_arms,
)
from classifier.runset import Run, RunSet
from classifier.stats import CI_LEVEL, patient_resample_weights, resampled_auroc

ARMS = ("real", "mix0.5")
LABELS = ("A", "B", "C")


@dataclass(frozen=True)
class Design:
    """One simulated study design (every study of a scenario draws a new one of these)."""

    n_patients: int = 100
    images_per_patient: int = 3
    prevalence: tuple[float, ...] = (0.4, 0.25, 0.15)  # of patients, per label
    separation: tuple[float, ...] = (1.0, 1.3, 0.8)  # real arm's d per label
    gain: float = 0.25  # mix0.5's d = real's d + gain
    n_seeds: int = 3  # per arm (per generator); the arms share seed numbers (paired by seed)
    seed_sd: float = 0.15  # training-seed sd of d
    n_generators: int = 0  # generators behind the mixed arm (0: none recorded)
    generator_sd: float = 0.0  # generator-to-generator sd of the mixed arm's d
    patient_share: float = 0.5  # within-class variance shared by a patient's images and runs
    image_share: float = 0.2  # shared by the runs on one image


CEILING = {"separation": (2.9, 3.2, 3.35), "gain": 0.25}  # AUROC 0.98-0.995
RARE = {"prevalence": (0.4, 0.25, 0.05)}
GENERATORS = {"n_generators": 3, "generator_sd": 0.3}

SCENARIOS = {
    "3 seeds": Design(),
    "5 seeds": Design(n_seeds=5),
    "3 seeds, no seed noise": Design(seed_sd=0.0),
    "3 seeds, seed noise x2": Design(seed_sd=0.3),
    "1 seed": Design(n_seeds=1),
    "3 generators x 3 seeds": Design(**GENERATORS),
    "3 generators x 5 seeds": Design(n_seeds=5, **GENERATORS),
    "3 generators x 1 seed each": Design(n_seeds=1, **GENERATORS),
    "ceiling, 3 seeds": Design(**CEILING),
    "ceiling, 5 seeds": Design(n_seeds=5, **CEILING),
    "rare label 5%, 3 seeds": Design(**RARE),
    "rare label 5%, 5 seeds": Design(n_seeds=5, **RARE),
}


def _separation(design: Design, arm: str) -> np.ndarray:
    return np.asarray(design.separation) + (design.gain if arm != "real" else 0.0)


def truth(design: Design) -> dict[str, np.ndarray]:
    """True expected AUROC over seeds per arm, and the delta, for (*labels, macro)."""
    out = {}
    for arm in ARMS:
        spread = design.seed_sd**2 + (design.generator_sd**2 if arm != "real" else 0.0)
        per_label = norm.cdf(_separation(design, arm) / np.sqrt(2.0 + spread))
        out[arm] = np.r_[per_label, per_label.mean()]
    out["delta"] = out[ARMS[1]] - out[ARMS[0]]
    return out


def simulate_study(design: Design, rng: np.random.Generator) -> RunSet:
    """One study: test truth, patients and every run's scores, as the report reads them."""
    n_labels, m = len(design.prevalence), design.images_per_patient
    n_images = design.n_patients * m
    y = np.repeat(rng.random((design.n_patients, n_labels)) < design.prevalence, m, axis=0)
    shared = np.sqrt(design.patient_share) * np.repeat(
        rng.normal(size=(design.n_patients, n_labels)), m, axis=0
    ) + np.sqrt(design.image_share) * rng.normal(size=(n_images, n_labels))
    own = np.sqrt(1.0 - design.patient_share - design.image_share)
    runs = []

    def effect(sd: float) -> np.ndarray:  # half shared by the labels, half each label's
        return sd * np.sqrt(0.5) * (rng.normal() + rng.normal(size=n_labels))

    # One seed per generator: generator g's run has seed g, and real as many seeds (one
    # generator per data seed, paired by seed as the report pairs it).
    per_seed = design.n_generators > 0 and design.n_seeds == 1
    for arm in ARMS:
        with_generators = arm != "real" and design.n_generators > 0
        for g in range(design.n_generators if with_generators else 1):
            d_generator = _separation(design, arm)
            if with_generators:
                d_generator = d_generator + effect(design.generator_sd)
            seeds = [g] if per_seed and with_generators else range(design.n_seeds)
            if per_seed and not with_generators:
                seeds = range(design.n_generators)
            for seed in seeds:
                d = d_generator + effect(design.seed_sd)
                score = y * d + shared + own * rng.normal(size=(n_images, n_labels))
                config = {"arm": arm, "seed": seed, "backbone": "simulated"}
                if with_generators:
                    config["synthetic_digest"] = f"generator{g}"
                path = Path(f"{arm}-g{g}-seed{seed}")
                runs.append(Run(path, arm, seed, LABELS, config, {}, score))
    return RunSet(
        runs=runs,
        labels=LABELS,
        images=[f"image{i}" for i in range(n_images)],
        patients=np.repeat([f"p{i}" for i in range(design.n_patients)], m),
        truth=y.astype(np.float64),
    )


def report_intervals(
    runset: RunSet, n_boot: int, seed: int, fast: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{arm or 'delta': (lo, hi) over (*labels, macro)} as the report computes them.

    `fast=False` runs `summarize_arms` itself; `fast=True` calls its interval functions
    directly (see the module docstring).
    """
    if not fast:
        # min_positive_patients=1: the truth's macro is over every label, so the report's must be
        report = summarize_arms(runset, n_boot=n_boot, seed=seed, min_positive_patients=1)
        table = report.table.set_index(["arm", "label"])
        names = [*runset.labels, MACRO]
        out = {arm: (table.loc[arm].loc[names, "auroc_lo"].to_numpy(),
                     table.loc[arm].loc[names, "auroc_hi"].to_numpy()) for arm in ARMS}  # fmt: skip
        mix = table.loc[ARMS[1]].loc[names]
        out["delta"] = (mix["delta_lo"].to_numpy(), mix["delta_hi"].to_numpy())
        return out
    weights, codes = patient_resample_weights(runset.patients, n_boot, seed)
    keep = np.ones(len(runset.labels), dtype=bool)  # every label has both classes here
    unit = np.ones((1, weights.shape[1]), dtype=weights.dtype)
    data = {}
    for arm in ARMS:
        runs = [r for r in runset.runs if r.arm == arm]
        both = [
            _with_macro(resampled_auroc(runset.truth, r.prob, np.vstack([unit, weights]), codes),
                        keep)
            for r in runs
        ]  # fmt: skip
        data[arm] = _ArmData(
            seeds=[r.seed for r in runs],
            values=np.stack([b[0] for b in both]),
            resampled=np.stack([b[1:] for b in both]),
            generators=[r.generator for r in runs],
        )
    out = {}
    for arm in ARMS:
        interval = arm_interval(data[arm])
        out[arm] = (interval.lo, interval.hi)
    interval, _ = delta_interval(data[ARMS[1]], data[ARMS[0]])
    out["delta"] = (interval.lo, interval.hi)
    return out


def coverage(
    design: Design, n_studies: int, n_boot: int, seed: int = 0, fast: bool = True
) -> dict[str, np.ndarray]:
    """{arm or 'delta': (*labels, macro) count of studies whose interval covered the truth}.

    Studies lacking a class for a label on the whole test set are redrawn (the report
    leaves such a label out of the macro; the truth here has every label).
    """
    rng = np.random.default_rng(seed)
    target = truth(design)
    hits = {key: np.zeros(len(LABELS) + 1, dtype=int) for key in target}
    done = 0
    while done < n_studies:
        runset = simulate_study(design, rng)
        if not all(0 < runset.truth[:, j].sum() < len(runset.truth) for j in range(len(LABELS))):
            continue
        intervals = report_intervals(runset, n_boot, seed=int(rng.integers(2**31)), fast=fast)
        for key, (lo, hi) in intervals.items():
            hits[key] += (lo <= target[key]) & (target[key] <= hi)
        done += 1
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--path", choices=("fast", "report"), default="fast")
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)
    print(
        f"nominal {CI_LEVEL:.0%} intervals; {args.studies} studies per scenario; "
        f"n_boot {args.n_boot}; path {args.path}; truth: expected AUROC over seeds"
    )
    print(f"default design: {Design()}")
    header = ("scenario", "target", "n_studies", "coverage", "95% CI of coverage")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in names:
        design = SCENARIOS[name]
        start = time.perf_counter()
        hits = coverage(design, args.studies, args.n_boot, args.seed, args.path == "fast")
        target_auroc = truth(design)["mix0.5"]
        print(f"<!-- {name}: true mix0.5 AUROC {np.round(target_auroc, 3).tolist()} -->")
        rows = [
            ("real, label A", hits["real"][0]),
            ("mix0.5, label A", hits["mix0.5"][0]),
            (f"mix0.5, label C ({design.prevalence[2]:.0%} prevalence)", hits["mix0.5"][2]),
            (f"delta, label C ({design.prevalence[2]:.0%} prevalence)", hits["delta"][2]),
            ("real, macro", hits["real"][-1]),
            ("mix0.5, macro", hits["mix0.5"][-1]),
            ("delta mix0.5 - real, label A", hits["delta"][0]),
            ("delta mix0.5 - real, macro", hits["delta"][-1]),
        ]
        for target, k in rows:
            ci = binomtest(int(k), args.studies).proportion_ci(0.95, method="exact")
            print(
                f"| {name} | {target} | {args.studies} | {k / args.studies:.3f} | "
                f"[{ci.low:.3f}, {ci.high:.3f}] |"
            )
        print(f"<!-- {name}: {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()
