"""The embedded phantom dataset: frontal chest-radiograph phantoms with reports and labels.

A demo and test fixture, never clinical data. Every image is drawn from a :class:`Study`
(a patient's stable anatomy plus this study's findings) with vectorised numpy on a
normalised coordinate grid: body outline, lungs with vascular markings, heart and
mediastinum, diaphragm domes, ribs, clavicles and spine, then the study's findings.

Conventions:
    * Images are PA/AP frontal views as displayed clinically: the patient's RIGHT is on the
      image's LEFT (``x < 0``), the patient's LEFT on the image's right. Every side word
      ("left", "right", "bilateral") in reports and in ``phantom_findings`` is the
      patient's side.
    * Modelled labels (No Finding, Cardiomegaly, Lung Opacity, Consolidation, Pneumothorax,
      Pleural Effusion, Support Devices) are never NaN: 1 drawn, -1 drawn subtly and
      hedged in the report, 0 absent. The report always states the four main findings
      (heart size, effusion, pneumothorax, consolidation) positively or as an explicit
      negative, so a 0 is backed by the text. The other seven CheXpert labels are NaN
      (not mentioned): the phantom never draws them.
    * No Finding follows CheXpert: 1 when no pathology is positive or uncertain (support
      devices do not count), else 0.
    * Consolidation implies Lung Opacity; a hedged consolidation ("patchy opacity,
      possibly early consolidation") is Consolidation -1 and Lung Opacity 1.
    * Side words appear in reports only for findings with laterality (effusion,
      pneumothorax, consolidation), so a prompt's "left"/"right" always names a finding's
      side; device sentences carry none.
    * Cardiomegaly is a patient trait (heart size is anatomy, stable across studies); the
      other findings are drawn per study.

Manifest (`write_phantom_dataset`): manifest v1 rows (source 'real', dataset 'phantom',
split 'train', view PA or AP) with `report` = the impression and extra columns
`report_findings` (FINDINGS-style text), `phantom_findings` (JSON: finding -> side,
severity, lobe, devices, uncertain; the ground truth for generator evaluation),
`phantom_ctr` (cardiothoracic ratio drawn) and `image_sha256`. Parquet metadata
`cxraug.notes` says it is a synthetic demo; `cxraug.phantom` records n, size, seed and
patients.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from manifests.errors import UserError
from manifests.io import Manifest, write_manifest
from manifests.schema import CHEXPERT_LABELS

DATASET = "phantom"
NOTE = (
    "synthetic phantom chest radiographs drawn by cxraug demo-data: a demo and test "
    "fixture, never clinical data"
)
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
# Where each of the patient's sides lies on the image (clinical display convention).
IMAGE_HALF = {"right": "left", "left": "right"}
NAMES = {"central venous catheter": "central line"}  # short names for device lists
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


def phantom_studies(n: int, seed: int = 0, patients: int | None = None) -> list[Study]:
    """The `n` studies of a phantom dataset over `patients` patients (default n/3)."""
    if n <= 0:
        raise UserError(f"--n: {n} images requested; valid: a positive number")
    if patients is None:
        patients = max(1, n // 3)
    if patients <= 0 or patients > n:
        raise UserError(f"--patients: {patients}; valid: 1 to --n ({n})")
    studies = []
    for p, count in enumerate(_patient_counts(n, patients)):
        patient = sample_patient(seed, p)
        studies += [sample_study(patient, s, seed) for s in range(count)]
    return studies


# ---------------------------------------------------------------------- labels and reports


def study_labels(study: Study, labels=CHEXPERT_LABELS) -> dict[str, float]:
    """CheXpert-14 label values for a study (see the module docstring for the policy)."""
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


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _effusion_side(side: str) -> str:
    return "bilateral" if side == "both" else side


def _positive_sentences(study: Study, rng: np.random.Generator) -> list[str]:
    f = study.findings
    out = []
    if "Cardiomegaly" in f:
        c = f["Cardiomegaly"]
        if c["uncertain"]:
            out.append(
                _pick(
                    rng,
                    [
                        "Borderline heart size, possible mild cardiomegaly.",
                        "The cardiac silhouette is at the upper limits of normal; mild cardiomegaly is not excluded.",
                        "Possible mild cardiomegaly.",
                    ],
                )
            )
        else:
            sev = c["severity"]
            out.append(
                _pick(
                    rng,
                    [
                        f"{_cap(sev)} cardiomegaly.",
                        f"The heart is {'mildly' if sev == 'mild' else 'moderately' if sev == 'moderate' else 'severely'} enlarged, consistent with {sev} cardiomegaly.",
                        f"{_cap(sev)} enlargement of the cardiac silhouette (cardiomegaly).",
                    ],
                )
            )
    if "Pleural Effusion" in f:
        e = f["Pleural Effusion"]
        side, sev = _effusion_side(e["side"]), e["severity"]
        plural = "s" if e["side"] == "both" else ""
        angle = (
            "both costophrenic angles" if e["side"] == "both" else f"the {side} costophrenic angle"
        )
        if e["uncertain"]:
            out.append(
                _pick(
                    rng,
                    [
                        f"Possible small {side} pleural effusion{plural}.",
                        f"Blunting of {angle}, which may reflect small {side} pleural effusion{plural}.",
                        f"Small {side} pleural effusion{plural} cannot be excluded.",
                    ],
                )
            )
        else:
            out.append(
                _pick(
                    rng,
                    [
                        f"{_cap(sev)} {side} pleural effusion{plural}.",
                        f"There {'are' if plural else 'is a'} {sev} {side} pleural effusion{plural}.",
                        f"{_cap(sev)} {side} pleural effusion{plural} with blunting of {angle}.",
                        f"{_cap(sev)} {side} pleural effusion{plural} with a meniscus.",
                    ],
                )
            )
    if "Pneumothorax" in f:
        p = f["Pneumothorax"]
        side, sev = p["side"], p["severity"]
        if p["uncertain"]:
            out.append(
                _pick(
                    rng,
                    [
                        f"Possible small {side} apical pneumothorax.",
                        f"A small {side} pneumothorax cannot be excluded.",
                        f"Questionable small {side} apical pneumothorax; consider repeat imaging.",
                    ],
                )
            )
        else:
            out.append(
                _pick(
                    rng,
                    [
                        f"{_cap(sev)} {side} pneumothorax.",
                        f"There is a {sev} {side} pneumothorax.",
                        f"{_cap(sev)} {side} pneumothorax with a visible pleural line.",
                        f"{_cap(sev)} {side}-sided pneumothorax.",
                    ],
                )
            )
    if "Consolidation" in f:
        c = f["Consolidation"]
        lobe = c["lobe"]
        if c["uncertain"]:
            out.append(
                _pick(
                    rng,
                    [
                        f"Patchy opacity in the {lobe}, possibly early consolidation.",
                        f"Hazy {lobe} opacity; consolidation is not excluded.",
                        f"Subtle opacity in the {lobe}, which may represent early consolidation.",
                    ],
                )
            )
        else:
            out.append(
                _pick(
                    rng,
                    [
                        f"{_cap(lobe)} consolidation.",
                        f"Focal consolidation in the {lobe}.",
                        f"Dense consolidation of the {lobe}, concerning for pneumonia.",
                        f"Airspace consolidation in the {lobe}.",
                    ],
                )
            )
    if "Support Devices" in f:
        d = f["Support Devices"]
        if len(d["devices"]) > 1:  # one compact sentence keeps prompts under 77 tokens
            names = [NAMES.get(x, x) for x in d["devices"]]
            listed = ", ".join(names[:-1]) + " and " + names[-1]
            out.append(_pick(rng, [f"{_cap(listed)} in place.", f"Support devices: {listed}."]))
            return out
        parts = []
        for device in d["devices"]:
            if device == "endotracheal tube":
                parts.append(
                    _pick(
                        rng,
                        [
                            "Endotracheal tube terminates about 4 cm above the carina.",
                            "Endotracheal tube in standard position.",
                        ],
                    )
                )
            elif device == "enteric tube":
                parts.append(
                    _pick(
                        rng,
                        [
                            "Enteric tube courses below the diaphragm into the stomach.",
                            "Nasogastric tube tip in the stomach.",
                        ],
                    )
                )
            elif device == "central venous catheter":
                parts.append(
                    _pick(
                        rng,
                        [
                            "Subclavian central venous catheter with tip in the SVC.",
                            "Central line terminates in the superior vena cava.",
                        ],
                    )
                )
            else:
                parts.append(
                    _pick(
                        rng,
                        [
                            "Cardiac pacemaker with leads projecting over the heart.",
                            "Dual-lead pacemaker in place.",
                        ],
                    )
                )
        out += parts
    return out


def _negative_sentences(study: Study, rng: np.random.Generator) -> list[str]:
    f = study.findings
    out = []
    if "Cardiomegaly" not in f:
        out.append(
            _pick(
                rng,
                [
                    "Heart size is normal.",
                    "Normal cardiomediastinal silhouette.",
                    "The cardiac silhouette is within normal limits.",
                    "No cardiomegaly.",
                ],
            )
        )
    lung_negs = []
    if "Consolidation" not in f:
        lung_negs.append("focal consolidation")
    if "Pleural Effusion" not in f:
        lung_negs.append("pleural effusion")
    if "Pneumothorax" not in f:
        lung_negs.append("pneumothorax")
    if lung_negs:
        if len(lung_negs) == 1 or rng.random() < 0.5:
            lead = _pick(rng, ["No", "There is no", "No evidence of"])
            joined = (
                lung_negs[0]
                if len(lung_negs) == 1
                else ", ".join(lung_negs[:-1])
                + (", or " if len(lung_negs) > 2 else " or ")
                + lung_negs[-1]
            )
            out.append(f"{lead} {joined}.")
        else:
            out += [f"No {neg}." for neg in lung_negs]
    return out


def study_report(study: Study, rng: np.random.Generator) -> tuple[str, str]:
    """(impression, findings) text for a study, in radiology language."""
    positives = _positive_sentences(study, rng)
    negatives = _negative_sentences(study, rng)
    normal = not any(k in study.findings for k in PATHOLOGIES)
    impression = list(positives)
    if normal and rng.random() < 0.6:
        impression.insert(
            0,
            _pick(
                rng,
                [
                    "No acute cardiopulmonary process.",
                    "No acute cardiopulmonary abnormality.",
                    "Clear lungs.",
                ],
            ),
        )
    impression += negatives
    view = "Portable AP" if study.view == "AP" else "PA"
    findings = " ".join(
        [f"{view} view of the chest.", *positives, *negatives, "No acute osseous abnormality."]
    )
    return " ".join(impression), findings


# ---------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x (1, size) and y (size, 1), float32."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    return c[None, :], c[:, None]


@functools.lru_cache(maxsize=8)
def _upsampler(size: int, coarse: int = 8) -> np.ndarray:
    """(size, coarse) bilinear interpolation matrix: A @ noise @ A.T upsamples smoothly."""
    pos = (np.arange(size) + 0.5) / size * coarse - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, coarse - 1)
    hi = np.clip(lo + 1, 0, coarse - 1)
    w = np.clip(pos - lo, 0, 1)
    a = np.zeros((size, coarse), dtype=np.float32)
    a[np.arange(size), lo] += 1 - w
    a[np.arange(size), hi] += w
    return a


def _smooth_noise(rng: np.random.Generator, size: int, coarse: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bilinearly upsampled (two matmuls)."""
    a = _upsampler(size, coarse)
    return a @ rng.random((coarse, coarse), dtype=np.float32) @ a.T


def _fluffy(d: np.ndarray) -> np.ndarray:
    """A wide smoothstep edge (airspace disease fades into aerated lung, no visible rim)."""
    t = np.clip(d / 0.2 + 0.5, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """A soft mask from a signed distance (positive inside), about one pixel of ramp."""
    out = d * np.float32(1 / px)
    out += 0.5
    return np.minimum(np.maximum(out, 0.0, out=out), 1.0, out=out)


def _blur(img: np.ndarray) -> np.ndarray:
    """A cheap separable [1, 2, 1] / 4 blur (the detector's point-spread)."""
    out = img.copy()
    out[1:-1, :] = 0.25 * img[:-2, :] + 0.5 * img[1:-1, :] + 0.25 * img[2:, :]
    tmp = out.copy()
    out[:, 1:-1] = 0.25 * tmp[:, :-2] + 0.5 * tmp[:, 1:-1] + 0.25 * tmp[:, 2:]
    return out


def _splat(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, weight: float) -> None:
    """Add points given in [-1, 1] coordinates to `canvas` (bilinear), for thin lines."""
    size = canvas.shape[0]
    px = (xs + 1) * 0.5 * size - 0.5
    py = (ys + 1) * 0.5 * size - 0.5
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dx, dy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(canvas, (yi[ok], xi[ok]), weight * w[ok])


def _curve(points: list[tuple[float, float]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples along a polyline through `points` (about 3 per pixel)."""
    pts = np.asarray(points, dtype=np.float64)
    seg = np.diff(pts, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    xs, ys = [], []
    for (x0, y0), (dx, dy), length in zip(pts[:-1], seg, lengths, strict=True):
        k = max(2, int(length * size * 1.5))
        t = np.arange(k) / k
        xs.append(x0 + dx * t)
        ys.append(y0 + dy * t)
    return np.concatenate(xs), np.concatenate(ys)


# Lung ellipse (side coordinates: L = distance from the midline, Y down): centre, semi-axes
# and the skew that puts the apex medially.
LUNG_L, LUNG_Y, LUNG_A, LUNG_B, LUNG_SKEW = 0.45, 0.08, 0.38, 0.84, 0.14
THORACIC_WIDTH = 2 * (LUNG_L + LUNG_A)  # inner rib margins: the CTR's denominator


def _dome_y(L: np.ndarray, dome: float) -> np.ndarray:
    """The hemidiaphragm: highest medially, deepest at the costophrenic angle."""
    return dome + 0.9 * (L - 0.3) ** 2


def _lung_distance(L: np.ndarray, Y: np.ndarray, dome: float) -> np.ndarray:
    """Signed distance-like field of one lung (positive inside), side coordinates.

    A skewed ellipse (rounded apex, convex lateral wall) cut by the mediastinum medially and
    by the diaphragm dome below; the dome meets the wall in a sharp costophrenic angle.
    """
    lu = (L - LUNG_L - LUNG_SKEW * (Y - LUNG_Y)) / LUNG_A
    lv = (Y - LUNG_Y) / LUNG_B
    ellipse = (1 - np.sqrt(lu * lu + lv * lv)) * LUNG_A
    return np.minimum(np.minimum(ellipse, L - 0.07), _dome_y(L, dome) - Y)


def _vessels(L, Y, right, rng) -> np.ndarray:
    """Vascular markings: tapering lines radiating from each hilum, plus the hilar shadows."""
    hy = -0.02
    dl, dy = L - 0.15, Y - hy
    r = np.sqrt(dl * dl + dy * dy)
    theta = np.arctan2(dy, dl)
    phase = np.where(right, *rng.uniform(0, 6.3, size=2).astype(np.float32))
    n1, n2 = int(rng.integers(7, 10)), int(rng.integers(12, 16))
    wob = 0.6 * np.sin(r * 11.0 + np.float32(rng.uniform(0, 6.3)))
    c1 = np.clip(np.cos(n1 * theta + phase + 1.1 * wob), 0, 1)
    c2 = np.clip(np.cos(n2 * theta - 0.7 * phase + 0.9 * wob), 0, 1)
    c1 *= c1
    c1 *= c1
    c1 *= c1  # ** 8: thin lines, cheaper than a float power
    c2 *= c2
    c2 *= c2
    c2 *= c2
    c2 *= c2
    vessels = (c1 + 0.7 * c2 * np.clip(r / 0.25, 0, 1)) * np.exp(-r / 0.3)
    hilum = np.exp(-((L - 0.2) ** 2 + (dy / 1.6) ** 2) / 0.006)
    return vessels * np.clip(r / 0.04, 0, 1) + 0.7 * hilum


def draw_phantom(study: Study, size: int) -> np.ndarray:
    """Draw one study as a 2-D uint8 image of `size` x `size` pixels.

    Shapes add up path lengths (attenuation) `A`; the film shows `1 - exp(-A)`, so bone
    stands out over the dark lungs and fades over the bright mediastinum as on a real
    radiograph.
    """
    rng = np.random.default_rng(study.draw_seed)
    p = study.patient
    f = study.findings
    gx, gy = _grid(size)
    sx = p.body_width * study.zoom
    sy = p.body_height * study.zoom
    # X is a row (1, S) and Y a column (S, 1): terms of one coordinate cost S, not S * S,
    # and numpy broadcasting builds the full image only where both meet.
    X = (gx - study.shift_x) / np.float32(sx)
    Y = Y1 = (gy - study.shift_y) / np.float32(sy)
    # Edge width: one pixel, but never sharper than at 160 px (large images stay film-like).
    px = max(2.0 / size, 1 / 80) / min(sx, sy)
    L = np.abs(X)
    right = X < 0  # the patient's right is on the image's left
    ap = study.view == "AP"
    lift = 0.05 if ap else 0.0  # supine AP films: lower lung volumes
    right_dome, left_dome = p.right_dome - lift, p.left_dome - lift
    dome = np.where(right, np.float32(right_dome), np.float32(left_dome))

    # Body: neck, sloping shoulders, chest wall; thickness like a chord through a cylinder.
    half_w = 0.2 + 0.74 * np.clip((Y1 + 0.98) / 0.3, 0, 1) ** 0.7 - 0.05 * np.clip(Y1 - 0.5, 0, 1)
    body = _soft(half_w - L, px)
    chord = np.sqrt(np.clip(1 - (L / (half_w + 0.03)) ** 2, 0, 1))
    A = body * (0.35 + 0.95 * chord)
    if p.sex == "F":
        A = A + 0.18 * np.exp(-(((L - 0.55) / 0.22) ** 2) - ((Y - 0.45) / 0.16) ** 2)

    # Lungs and their markings.
    lung_d = _lung_distance(L, Y, dome)
    lung = _soft(lung_d, px)
    air = lung.copy()  # share of each pixel that is aerated lung
    vessels = _vessels(L, Y, right, rng)
    tissue = np.ones_like(lung)  # lung parenchyma present (0 in a pneumothorax)

    if "Pneumothorax" in f:
        # The lung collapses toward an anchor; beyond the pleural line: air, no markings.
        info = f["Pneumothorax"]
        k = info["collapse"]
        side = right if info["side"] == "right" else ~right
        side_dome = right_dome if info["side"] == "right" else left_dome
        ax, ay = (0.2, 0.05) if k < 0.75 else (0.3, side_dome + 0.05)
        collapsed_d = _lung_distance(ax + (L - ax) / k, ay + (Y - ay) / k, side_dome) * k
        gap = side * lung * (1 - _soft(collapsed_d, px))
        tissue = tissue - gap
        line = np.exp(-((collapsed_d / (0.8 * px)) ** 2)) * side * lung
        A = A + 0.25 * line + 0.25 * (1 - k) * side * lung * (1 - gap)

    if "Consolidation" in f:
        # A lobe fills with fluid: mottled, fluffy edges, sharp along a fissure.
        info = f["Consolidation"]
        side = right if info["side"] == "right" else ~right
        lobe = info["lobe"]
        # Irregular, fluffy borders where the lobe meets aerated lung; sharp at a fissure.
        rough = _smooth_noise(rng, size, 6) - 0.5
        if lobe == "right upper lobe":  # sharp below, along the minor fissure
            region = _soft(0.1 * (L - 0.45) ** 2 - 0.02 - Y, px * 1.5)
        elif lobe == "left upper lobe":  # with the lingula, hazier below
            region = _fluffy(0.12 - 0.25 * (L - 0.2) - Y + 0.15 * rough)
        elif "middle" in lobe:  # against the right heart border, minor fissure above
            region = _soft(Y + 0.02, px * 1.5) * _fluffy(0.62 - L - 0.35 * Y + 0.15 * rough)
        else:  # lower lobes: the base, fluffy upper edge
            region = _fluffy(Y - 0.15 + 0.3 * (0.55 - L) + 0.15 * rough)
        mottle = _smooth_noise(rng, size, 16)
        density = (0.45 if info["uncertain"] else 0.95) * (0.5 + 0.5 * mottle)
        fill = side * region * lung * density
        air = air * (1 - fill)
        vessels = vessels * (1 - 0.5 * fill)

    if "Pleural Effusion" in f:
        # Dependent fluid with a meniscus climbing the lateral wall; it fills the
        # costophrenic angle (blunting) and hides the hemidiaphragm.
        info = f["Pleural Effusion"]
        h = info["height"]
        for name in ("right", "left") if info["side"] == "both" else (info["side"],):
            side = right if name == "right" else ~right
            side_dome = right_dome if name == "right" else left_dome
            meniscus = np.clip((L - 0.15) / 0.65, 0, 1) ** 2
            level = side_dome + 0.12 - 1.15 * h - (0.05 + 0.7 * h) * meniscus
            t = np.clip((Y - level) / (0.03 + 0.15 * h), 0, 1)
            fluid = side * lung * t * t * (3 - 2 * t)
            air = air * (1 - fluid)
            vessels = vessels * (1 - fluid)
            A = A + 0.15 * fluid

    # Heart (a tilted ellipse, apex to the patient's left) and mediastinum in front of the
    # lungs: they hide the air behind them.
    ctr = study_ctr(study)
    heart_w = ctr * THORACIC_WIDTH
    cos_t, sin_t = math.cos(0.5), math.sin(0.5)
    ha, hb = 1.0, 0.72  # semi-axes ratio; scaled so the horizontal extent is heart_w
    scale = heart_w / 2 / math.sqrt((ha * cos_t) ** 2 + (hb * sin_t) ** 2)
    hx, hy = heart_w / 6.0, 0.2 + 0.1 * (ctr - 0.45)
    u = ((X - hx) * cos_t + (Y - hy) * sin_t) / (ha * scale)
    v = (-(X - hx) * sin_t + (Y - hy) * cos_t) / (hb * scale)
    radius = np.sqrt(u * u + v * v)
    heart = _soft((1 - radius) * hb * scale, px)
    depth = np.sqrt(np.maximum(1 - radius * radius, 0))  # thicker in the middle
    med_w = 0.1 + 0.03 * np.clip(Y1 + 0.3, 0, 1)
    mediastinum = _soft(med_w - np.abs(X - 0.01), px) * _soft(0.35 - Y, px)
    knob = _soft((1 - np.hypot((X - 0.1) / 0.075, (Y + 0.33) / 0.09)) * 0.075, px)
    central = np.maximum(np.maximum(heart, mediastinum), knob)
    air = air * (1 - 0.9 * central)
    vessels = vessels * (1 - 0.8 * central)
    above = _soft(_dome_y(L, dome) + 0.03 - Y, 3 * px)  # the heart sits on the diaphragm
    A = A + (0.08 * central + 0.12 * depth) * above

    # Trachea: an air column in the mediastinum down to the carina.
    trachea = _soft(0.028 - np.abs(X - 0.0), px) * _soft(-0.3 - Y, px)
    A = A - 0.45 * trachea

    # Gastric bubble under the left hemidiaphragm (hidden by a left effusion's fluid).
    bubble = _soft(1 - np.hypot((X - 0.38) / 0.13, (Y - left_dome - 0.14) / 0.055), 0.2)
    A = A - 0.45 * bubble

    # Bones: spine, posterior and anterior ribs, clavicles.
    spine = _soft(0.065 - L, px) * (0.8 + 0.2 * np.cos(2 * math.pi * (Y1 / 0.095)))
    rib_p = (Y + 0.66 + 0.12 * L - 0.55 * L * L) / p.rib_spacing
    frac = rib_p - np.floor(rib_p)
    band = np.abs(frac - 0.28)
    ribs = _soft(0.17 - band, 1.2 * px / p.rib_spacing) + 0.6 * _soft(
        0.04 - np.abs(band - 0.15), 1.2 * px / p.rib_spacing
    )
    chest = _soft(LUNG_L + LUNG_A + 0.05 - L, px) * _soft(L - 0.06, px)
    ribs = ribs * (rib_p > 0) * (rib_p < 10) * chest
    ant_p = (Y + 0.62 - 0.45 * (0.85 - L)) / (p.rib_spacing * 1.3)
    afrac = ant_p - np.floor(ant_p)
    anterior = _soft(0.12 - np.abs(afrac - 0.5), 3 * px) * (ant_p > 0) * (ant_p < 5)
    anterior = anterior * _soft(L - 0.3, 6 * px) * chest
    clav_y = -0.56 - 0.42 * (L - 0.08) + 0.3 * (L - 0.08) ** 2 - (0.05 if ap else 0.0)
    clavicle = _soft(0.034 - np.abs(Y - clav_y), px) * _soft(0.72 - L, px) * _soft(L - 0.07, px)
    A = A + 0.25 * spine + 0.09 * ribs + 0.05 * anterior + 0.5 * clavicle

    # Lung air darkens; vessels and parenchyma put back a little density.
    A = A - 0.95 * air + (0.16 * tissue + 0.45 * vessels * tissue) * lung

    if "Support Devices" in f:
        A = A + _devices(f["Support Devices"], study, size, X, Y, px)

    img = np.exp(np.float32(-0.95 * study.contrast) * np.maximum(_blur(A), 0))
    img = img + np.float32(study.noise) * rng.standard_normal(img.shape, dtype=np.float32)
    # film density is 1 - transmitted share; the exposure curve is a lookup table
    levels = len(_exposure_lut(study.exposure)) - 1
    index = np.clip((1 - img) * levels + 0.5, 0, levels).astype(np.intp)
    return _exposure_lut(study.exposure)[index]


@functools.lru_cache(maxsize=4096)
def _exposure_lut(exposure: float) -> np.ndarray:
    """uint8 display values for 1024 film densities under an exposure (gamma) curve."""
    return (np.linspace(0, 1, 1024) ** exposure * 255 + 0.5).astype(np.uint8)


def _devices(info: dict, study: Study, size: int, X, Y, px: float) -> np.ndarray:
    """Radio-opaque tubes and lines as attenuation (splatted points, blurred later)."""
    p = study.patient
    sx, sy = p.body_width * study.zoom, p.body_height * study.zoom
    wire = np.zeros((size, size), dtype=np.float32)
    extra = np.zeros((size, size), dtype=np.float32)

    def path(points, weight):
        pts = [(x * sx + study.shift_x, y * sy + study.shift_y) for x, y in points]
        xs, ys = _curve(pts, size)
        _splat(wire, xs, ys, weight)

    for device in info["devices"]:
        if device == "endotracheal tube":
            # a radio-opaque stripe along the tube, its walls fainter, tip above the carina
            path([(0.0, -1.05), (0.0, -0.42)], 1.6)
            for off in (-0.02, 0.02):
                path([(off, -1.05), (off, -0.42)], 0.5)
        elif device == "enteric tube":
            path([(0.02, -1.05), (0.03, -0.3), (0.06, 0.3), (0.2, 0.58), (0.38, 0.64)], 1.0)
        elif device == "central venous catheter":
            s = -1 if info["line_side"] == "right" else 1
            path([(s * 0.8, -0.6), (s * 0.4, -0.64), (s * 0.12, -0.5), (-0.05, -0.15)], 1.0)
        else:  # pacemaker: a generator box in the left chest wall, leads into the heart
            cx, cy = 0.55, -0.56
            box = _soft(0.07 - np.maximum(np.abs(X - cx) / 1.3, np.abs(Y - cy)), px)
            extra += 2.5 * box
            for end in ((-0.02, 0.22), (0.06, 0.36)):
                path([(cx, cy), (0.3, -0.6), (0.0, -0.35), end], 1.0)
    return extra + np.minimum(wire * (128.0 / size), 1.2)


# ---------------------------------------------------------------------- the dataset


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of `image` (deterministic bytes)."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def study_ctr(study: Study) -> float:
    """The cardiothoracic ratio drawn for this study (over 0.5: cardiomegaly)."""
    f = study.findings
    return float(f["Cardiomegaly"]["ctr"]) if "Cardiomegaly" in f else round(study.patient.ctr, 3)


def _study_row(study: Study, image_path: str, sha: str, seed: int) -> dict:
    rng = np.random.default_rng([seed, study.patient.index, study.study_index + 1, 7])
    impression, findings_text = study_report(study, rng)
    row = {
        "image_path": image_path,
        "source": "real",
        "dataset": DATASET,
        "patient_id": study.patient.patient_id,
        "study_id": study.study_id,
        "split": "train",
        "view": study.view,
        "sex": study.patient.sex,
        "age": study.age,
        "report": impression,
    }
    row.update(study_labels(study))
    row["report_findings"] = findings_text
    row["phantom_findings"] = json.dumps(study.findings, sort_keys=True)
    row["phantom_ctr"] = study_ctr(study)
    row["image_sha256"] = sha
    return row


def write_phantom_dataset(
    out_dir: Path,
    n: int,
    size: int = 128,
    seed: int = 0,
    patients: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Draw `n` phantom studies as PNGs under `out_dir/images/` and write the manifest.

    Args:
        out_dir: output folder; gets `images/*.png` and `manifest.parquet`.
        n: number of images (one per study).
        size: image side in pixels (at least 32).
        seed: everything (anatomy, findings, reports, noise) is deterministic in it.
        patients: number of patients (default n/3: several studies each).
        overwrite: replace an existing `manifest.parquet`.

    Returns:
        The path of `out_dir/manifest.parquet` (all rows real, split 'train').
    """
    if n <= 0:
        raise UserError(f"--n: {n} images requested; valid: a positive number")
    if size < 32:
        raise UserError(f"--size: {size} px is too small; valid: 32 or more")
    out_dir = Path(out_dir)
    path = out_dir / "manifest.parquet"
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; pass --overwrite to replace it")
    studies = phantom_studies(n, seed=seed, patients=patients)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for study in studies:
        data = encode_png(draw_phantom(study, size))
        rel = f"images/{study.study_id}.png"
        (out_dir / rel).write_bytes(data)
        rows.append(_study_row(study, rel, hashlib.sha256(data).hexdigest(), seed))
    frame = pd.DataFrame.from_records(rows)
    meta = {
        "cxraug.notes": json.dumps([NOTE]),
        "cxraug.phantom": json.dumps(
            {
                "n": n,
                "size": size,
                "seed": seed,
                "patients": len({s.patient.index for s in studies}),
            }
        ),
    }
    manifest = Manifest(rows=frame, labels=CHEXPERT_LABELS, root=out_dir, metadata=meta)
    return write_manifest(manifest, path, overwrite=overwrite)
