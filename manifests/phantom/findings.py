"""Phantom findings: a patient's demographics and stable anatomy, each study's findings,
and their labels.

Deterministic in the dataset seed; see `manifests.phantom` for the conventions (patient's
sides, hedged findings labelled -1, No Finding as in CheXpert) and the demographics design.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from manifests.errors import UserError
from manifests.schema import CHEXPERT_LABELS

MODELLED_LABELS = (
    "No Finding",
    "Cardiomegaly",
    "Lung Opacity",
    "Consolidation",
    "Pneumothorax",
    "Pleural Effusion",
    "Support Devices",
)
PATHOLOGIES = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation")
# Share of studies with each finding (positive or hedged) in the default draw; it varies by
# subgroup (`SUBGROUP_RISK`).
PREVALENCE = {
    "Cardiomegaly": 0.22,  # a patient trait: drawn per patient
    "Pleural Effusion": 0.24,
    "Pneumothorax": 0.2,
    "Consolidation": 0.22,
    "Support Devices": 0.22,
}
HEDGE_RATE = 0.2  # share of drawn findings that are subtle and hedged (label -1)
LOBES = {
    "right": ("right upper lobe", "right middle lobe", "right lower lobe"),
    "left": ("left upper lobe", "left lower lobe"),
}
DEVICES = ("endotracheal tube", "enteric tube", "central venous catheter", "pacemaker")

# Demographics (the design in `manifests.phantom`; its version is recorded with every draw).
PHANTOM_DESIGN = 2
FEMALE_SHARE = 0.3  # women: the under-represented subgroup
AGE_RANGE = (20.0, 88.0)
AGE_BETA = (2.2, 1.6)  # age = low + (high - low) * Beta(a, b): mean about 59 years
CTR_PER_YEAR = 0.0006  # the heart grows with age: ctr gains this per year over AGE_RANGE[0]
# Relative risk per finding: (factor per decade of age around 60, factor for women).
SUBGROUP_RISK = {
    "Cardiomegaly": (1.45, 0.8),
    "Pleural Effusion": (1.3, 1.0),
    "Pneumothorax": (0.8, 0.4),  # commoner in young men
    "Consolidation": (1.15, 0.9),
    "Support Devices": (1.15, 0.9),
}
MAX_PROBABILITY = 0.9
HEADER_SHARE = 0.5  # share of impressions starting with "72-year-old woman."


@dataclass(frozen=True)
class Patient:
    """Anatomy that stays the same across a patient's studies."""

    index: int
    patient_id: str
    sex: str
    age: float
    body_width: float  # horizontal scale of the thorax in the frame
    body_height: float  # vertical scale
    ctr: float  # cardiothoracic ratio at baseline
    rib_spacing: float
    right_dome: float  # height of the right hemidiaphragm (y, lower is larger)
    left_dome: float
    breast: float = 0.0  # size of the breast shadows (0: none)
    breast_drop: float = 0.0  # how far below their usual place they sit (grows with age)
    breast_asymmetry: float = 0.0  # right larger than left when positive
    bone_density: float = 1.0  # scales ribs, clavicles and spine (falls with age)
    cartilage: float = 0.0  # costal cartilage calcification, 0 to 1 (rises with age)
    aorta: float = 0.0  # aortic unfolding, 0 to 1 (rises with age)
    anatomy_phase: float = 0.0  # where along the cartilages the calcified flecks lie


@dataclass(frozen=True)
class Study:
    """One image: the patient, this study's findings and acquisition variation."""

    patient: Patient
    study_index: int
    study_id: str
    view: str
    age: float
    findings: dict = field(default_factory=dict)  # finding -> {side, severity, uncertain, ...}
    shift_x: float = 0.0
    shift_y: float = 0.0
    zoom: float = 1.0
    exposure: float = 1.0  # gamma on the final image
    contrast: float = 1.0
    noise: float = 0.02
    draw_seed: int = 0
    header: bool = False  # the impression starts with the patient's age and sex


# ---------------------------------------------------------------------- sampling studies


def _patient_counts(n: int, patients: int) -> list[int]:
    base, extra = divmod(n, patients)
    return [base + (1 if i < extra else 0) for i in range(patients)]


def _age_density(ages: np.ndarray) -> np.ndarray:
    """The default draw's age density (unnormalised) at `ages`: a scaled Beta."""
    low, high = AGE_RANGE
    t = np.clip((ages - low) / (high - low), 0.0, 1.0)
    a, b = AGE_BETA
    return t ** (a - 1) * (1 - t) ** (b - 1)


def relative_risk(finding: str, sex: str, age: float) -> float:
    """A finding's relative risk for a patient of `sex` and `age` (`SUBGROUP_RISK`)."""
    per_decade, women = SUBGROUP_RISK[finding]
    return per_decade ** ((age - 60.0) / 10.0) * (women if sex == "F" else 1.0)


@functools.cache
def _mean_risk(finding: str) -> float:
    """The mean relative risk over the default draw's sexes and ages (midpoint rule)."""
    low, high = AGE_RANGE
    ages = low + (np.arange(2000) + 0.5) / 2000 * (high - low)
    weight = _age_density(ages)
    per_decade, women = SUBGROUP_RISK[finding]
    by_age = float(np.sum(weight * per_decade ** ((ages - 60.0) / 10.0)) / np.sum(weight))
    return by_age * (FEMALE_SHARE * women + 1 - FEMALE_SHARE)


def finding_probability(finding: str, sex: str, age: float) -> float:
    """The chance that a study (Cardiomegaly: a patient) of `sex` and `age` has `finding`.

    Averaged over the default draw's demographics it is `PREVALENCE[finding]`.
    """
    p = PREVALENCE[finding] * relative_risk(finding, sex, age) / _mean_risk(finding)
    return min(p, MAX_PROBABILITY)


def age_ctr(age: float) -> float:
    """What age adds to the cardiothoracic ratio (0 at AGE_RANGE[0])."""
    return CTR_PER_YEAR * max(age - AGE_RANGE[0], 0.0)


def _ramp(age: float, start: float, full: float) -> float:
    return min(max((age - start) / (full - start), 0.0), 1.0)


def sample_patient(seed: int, index: int) -> Patient:
    """A patient's demographics and stable anatomy (deterministic in `seed` and `index`)."""
    rng = np.random.default_rng([seed, index, 0])
    sex = "F" if rng.random() < FEMALE_SHARE else "M"
    low, high = AGE_RANGE
    age = float(round(low + (high - low) * rng.beta(*AGE_BETA), 1))
    # Heart size: the label is decided on the ctr with the age term already in it.
    borderline = rng.uniform(0.5, 0.52)
    enlarged = rng.uniform(0.54, 0.63) + age_ctr(age)
    healthy = rng.uniform(0.37, 0.45) + age_ctr(age)  # under 0.5 at any age
    if rng.random() < finding_probability("Cardiomegaly", sex, age):
        ctr = float(borderline if rng.random() < 0.2 else enlarged)
    else:
        rng.random()  # the same number of draws either way
        ctr = float(healthy)
    woman = sex == "F"
    breast = rng.uniform(0.75, 1.25)
    breast_drop = 0.08 * _ramp(age, 25, 75) + rng.uniform(-0.03, 0.03)
    bone_loss = 0.006 * max(age - 35, 0) + (0.005 * max(age - 50, 0) if woman else 0.0)
    return Patient(
        index=index,
        patient_id=f"phantom-p{index:05d}",
        sex=sex,
        age=age,
        body_width=float(rng.uniform(0.9, 1.02) * (0.96 if woman else 1.0)),
        body_height=float(rng.uniform(0.92, 1.04)),
        ctr=ctr,
        rib_spacing=float(rng.uniform(0.105, 0.125)),
        right_dome=float(rng.uniform(0.34, 0.42)),
        left_dome=float(rng.uniform(0.4, 0.47)),
        breast=float(breast if woman else 0.0),
        breast_drop=float(breast_drop if woman else 0.0),
        breast_asymmetry=float(rng.uniform(-0.06, 0.06) if woman else 0.0),
        bone_density=float(np.clip(1 - bone_loss + rng.uniform(-0.04, 0.04), 0.45, 1.05)),
        cartilage=float(_ramp(age, 35, 75) * rng.uniform(0.6, 1.0)),
        aorta=float(_ramp(age, 40, 80) * rng.uniform(0.6, 1.0)),
        anatomy_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _severity_word(finding: str, value: float) -> str:
    if finding == "Cardiomegaly":
        return "mild" if value < 0.56 else "moderate" if value < 0.62 else "severe"
    return "small" if value < 0.2 else "moderate" if value < 0.35 else "large"


def sample_study(patient: Patient, study_index: int, seed: int) -> Study:
    """One study of `patient`: findings, view and acquisition jitter."""
    rng = np.random.default_rng([seed, patient.index, study_index + 1])
    findings: dict[str, dict] = {}
    age = round(patient.age + 0.7 * study_index, 1)
    if patient.ctr > 0.5:
        ctr = max(patient.ctr + rng.uniform(-0.005, 0.005), 0.501)  # jitter keeps the label
        hedged = ctr < 0.525
        findings["Cardiomegaly"] = {
            "ctr": round(float(ctr), 3),
            "severity": "mild" if hedged else _severity_word("Cardiomegaly", ctr),
            "uncertain": bool(hedged),
        }
    if rng.random() < finding_probability("Pleural Effusion", patient.sex, age):
        hedged = rng.random() < HEDGE_RATE
        side = str(rng.choice(["right", "left", "both"], p=[0.4, 0.35, 0.25]))
        height = rng.uniform(0.07, 0.1) if hedged else rng.uniform(0.12, 0.55)
        findings["Pleural Effusion"] = {
            "side": side,
            "severity": "small" if hedged else _severity_word("Pleural Effusion", height),
            "height": round(float(height), 3),
            "uncertain": bool(hedged),
        }
    if rng.random() < finding_probability("Pneumothorax", patient.sex, age):
        hedged = rng.random() < HEDGE_RATE
        side = str(rng.choice(["right", "left"]))
        large = (not hedged) and rng.random() < 0.45
        findings["Pneumothorax"] = {
            "side": side,
            "severity": "large" if large else "small",
            "collapse": round(
                float(
                    rng.uniform(0.55, 0.7)
                    if large
                    else rng.uniform(0.86, 0.9)
                    if hedged
                    else rng.uniform(0.76, 0.84)
                ),
                3,
            ),
            "uncertain": bool(hedged),
        }
    if rng.random() < finding_probability("Consolidation", patient.sex, age):
        hedged = rng.random() < HEDGE_RATE
        side = str(rng.choice(["right", "left"]))
        lobe = str(rng.choice(LOBES[side]))
        findings["Consolidation"] = {
            "side": side,
            "lobe": lobe,
            "severity": "patchy" if hedged else "dense",
            "uncertain": bool(hedged),
        }
    devices: list[str] = []
    if rng.random() < finding_probability("Support Devices", patient.sex, age):
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        devices = sorted(rng.choice(DEVICES, size=k, replace=False).tolist())
        entry: dict = {"devices": devices}
        if "central venous catheter" in devices:
            entry["line_side"] = str(rng.choice(["right", "left"]))
        findings["Support Devices"] = entry
    view = "AP" if rng.random() < (0.6 if devices else 0.1) else "PA"
    return Study(
        patient=patient,
        study_index=study_index,
        study_id=f"{patient.patient_id}-s{study_index}",
        view=view,
        age=age,
        findings=findings,
        shift_x=float(rng.uniform(-0.05, 0.05)),
        shift_y=float(rng.uniform(-0.04, 0.04)),
        zoom=float(rng.uniform(0.95, 1.05)),
        exposure=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.92, 1.08)),
        noise=float(rng.uniform(0.01, 0.03)),
        draw_seed=int(rng.integers(0, 2**31 - 1)),
        header=bool(rng.random() < HEADER_SHARE),
    )


def phantom_studies(
    n: int, seed: int = 0, patients: int | None = None, first_patient: int = 0
) -> list[Study]:
    """The `n` studies of a phantom dataset over `patients` patients (default n/3).

    Patients are numbered from `first_patient`: each patient's anatomy, studies and id
    (`phantom-p{index:05d}`) follow from its number and the seed, so a pool that starts
    past another draw's last number shares no patient with it, whatever the seeds.
    """
    if n <= 0:
        raise UserError(f"--n: {n} images requested; valid: a positive number")
    if patients is None:
        patients = max(1, n // 3)
    if patients <= 0 or patients > n:
        raise UserError(f"--patients: {patients}; valid: 1 to --n ({n})")
    if first_patient < 0:
        raise UserError(f"--first-patient: {first_patient}; valid: 0 or more")
    studies = []
    for p, count in enumerate(_patient_counts(n, patients), start=first_patient):
        patient = sample_patient(seed, p)
        studies += [sample_study(patient, s, seed) for s in range(count)]
    return studies


# ---------------------------------------------------------------------- labels


def study_labels(study: Study, labels=CHEXPERT_LABELS) -> dict[str, float]:
    """CheXpert-14 label values for a study (the policy: see `manifests.phantom`)."""
    out = {label: float("nan") for label in labels}
    for label in MODELLED_LABELS:
        out[label] = 0.0
    f = study.findings
    for label in PATHOLOGIES:
        if label in f:
            out[label] = -1.0 if f[label]["uncertain"] else 1.0
    if "Consolidation" in f:
        out["Lung Opacity"] = 1.0
    if "Support Devices" in f:
        out["Support Devices"] = 1.0
    sick = any(out[label] != 0 for label in (*PATHOLOGIES, "Lung Opacity"))
    out["No Finding"] = 0.0 if sick else 1.0
    return {k: v for k, v in out.items() if k in labels}


def study_ctr(study: Study) -> float:
    """The cardiothoracic ratio drawn for this study (over 0.5: cardiomegaly)."""
    f = study.findings
    return float(f["Cardiomegaly"]["ctr"]) if "Cardiomegaly" in f else round(study.patient.ctr, 3)
