"""Phantom findings: a patient's stable anatomy, each study's findings, and their labels.

Deterministic in the dataset seed; see `manifests.phantom` for the conventions (patient's
sides, hedged findings labelled -1, No Finding as in CheXpert).
"""

from __future__ import annotations

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
# Share of studies with each finding (positive or hedged).
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


# ---------------------------------------------------------------------- sampling studies


def _patient_counts(n: int, patients: int) -> list[int]:
    base, extra = divmod(n, patients)
    return [base + (1 if i < extra else 0) for i in range(patients)]


def sample_patient(seed: int, index: int) -> Patient:
    """A patient's stable anatomy (deterministic in `seed` and `index`)."""
    rng = np.random.default_rng([seed, index, 0])
    cardiomegaly = rng.random() < PREVALENCE["Cardiomegaly"]
    if cardiomegaly:
        ctr = float(rng.choice([rng.uniform(0.5, 0.52), rng.uniform(0.54, 0.66)], p=[0.2, 0.8]))
    else:
        ctr = float(rng.uniform(0.38, 0.46))
    sex = str(rng.choice(["M", "F"]))
    return Patient(
        index=index,
        patient_id=f"phantom-p{index:05d}",
        sex=sex,
        age=float(round(rng.uniform(20, 88), 1)),
        body_width=float(rng.uniform(0.9, 1.02) * (1.0 if sex == "M" else 0.96)),
        body_height=float(rng.uniform(0.92, 1.04)),
        ctr=ctr,
        rib_spacing=float(rng.uniform(0.105, 0.125)),
        right_dome=float(rng.uniform(0.34, 0.42)),
        left_dome=float(rng.uniform(0.4, 0.47)),
    )


def _severity_word(finding: str, value: float) -> str:
    if finding == "Cardiomegaly":
        return "mild" if value < 0.56 else "moderate" if value < 0.62 else "severe"
    return "small" if value < 0.2 else "moderate" if value < 0.35 else "large"


def sample_study(patient: Patient, study_index: int, seed: int) -> Study:
    """One study of `patient`: findings, view and acquisition jitter."""
    rng = np.random.default_rng([seed, patient.index, study_index + 1])
    findings: dict[str, dict] = {}
    if patient.ctr > 0.5:
        ctr = patient.ctr + rng.uniform(-0.005, 0.005)
        hedged = ctr < 0.525
        findings["Cardiomegaly"] = {
            "ctr": round(float(ctr), 3),
            "severity": "mild" if hedged else _severity_word("Cardiomegaly", ctr),
            "uncertain": bool(hedged),
        }
    if rng.random() < PREVALENCE["Pleural Effusion"]:
        hedged = rng.random() < HEDGE_RATE
        side = str(rng.choice(["right", "left", "both"], p=[0.4, 0.35, 0.25]))
        height = rng.uniform(0.07, 0.1) if hedged else rng.uniform(0.12, 0.55)
        findings["Pleural Effusion"] = {
            "side": side,
            "severity": "small" if hedged else _severity_word("Pleural Effusion", height),
            "height": round(float(height), 3),
            "uncertain": bool(hedged),
        }
    if rng.random() < PREVALENCE["Pneumothorax"]:
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
    if rng.random() < PREVALENCE["Consolidation"]:
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
    if rng.random() < PREVALENCE["Support Devices"]:
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
        age=round(patient.age + 0.7 * study_index, 1),
        findings=findings,
        shift_x=float(rng.uniform(-0.05, 0.05)),
        shift_y=float(rng.uniform(-0.04, 0.04)),
        zoom=float(rng.uniform(0.95, 1.05)),
        exposure=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.92, 1.08)),
        noise=float(rng.uniform(0.01, 0.03)),
        draw_seed=int(rng.integers(0, 2**31 - 1)),
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
