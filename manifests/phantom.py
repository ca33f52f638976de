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
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
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
                    else rng.uniform(0.9, 0.93)
                    if hedged
                    else rng.uniform(0.8, 0.87)
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
        angle = "costophrenic angles" if e["side"] == "both" else f"{side} costophrenic angle"
        if e["side"] == "both":
            angle = "both costophrenic angles"
        if e["uncertain"]:
            out.append(
                _pick(
                    rng,
                    [
                        f"Possible small {side} pleural effusion{plural}.",
                        f"Blunting of the {angle}, which may reflect small {side} pleural effusion{plural}.",
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
                        f"There {'are' if plural else 'is'} a {sev} {side} pleural effusion{plural}.",
                        f"{_cap(sev)} {side} pleural effusion{plural} with blunting of the {angle}.",
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
                            f"{_cap(d['line_side'])} subclavian central venous catheter with tip in the SVC.",
                            f"{_cap(d['line_side'])}-sided central line terminates in the superior vena cava.",
                        ],
                    )
                )
            else:
                parts.append(
                    _pick(
                        rng,
                        [
                            "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
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


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """A soft mask from a signed distance (positive inside), about one pixel of ramp."""
    return np.clip(d / px + 0.5, 0.0, 1.0)


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


def _lung_distance(L: np.ndarray, Y: np.ndarray, dome: float, side_w: float) -> np.ndarray:
    """Signed distance-like field of one lung in side coordinates (L = lateral distance).

    Positive inside. The lung is bounded by a rounded apex, the lateral chest wall, the
    mediastinum (medially) and the diaphragm dome below.
    """
    lateral = 0.8 * side_w
    top = -0.64
    # lateral wall narrows toward the apex
    wall = lateral - (lateral - 0.3) * np.clip((-0.05 - Y) / 0.6, 0, 1) ** 2.2 - L
    apex = Y - (top + 1.4 * (L - 0.33) ** 2)
    medial = L - 0.07
    dome_y = dome + 1.1 * (L - 0.38) ** 2
    below = dome_y - Y
    return np.minimum(np.minimum(wall, apex), np.minimum(medial, below))


def draw_phantom(study: Study, size: int) -> np.ndarray:
    """Draw one study as a 2-D uint8 image of `size` x `size` pixels."""
    rng = np.random.default_rng(study.draw_seed)
    p = study.patient
    f = study.findings
    gx, gy = _grid(size)
    sx = p.body_width * study.zoom
    sy = p.body_height * study.zoom
    X = (gx - study.shift_x) / sx  # (1, S)
    Y = (gy - study.shift_y) / sy  # (S, 1)
    X2 = np.broadcast_to(X, (size, size))
    Y2 = np.broadcast_to(Y, (size, size))
    px = 2.0 / size / min(sx, sy)  # one pixel in normalised units
    L = np.abs(X2)
    right = X2 < 0  # the patient's right lung is on the image's left

    # Body: neck above, shoulders, chest wall; thickness like a chord through a cylinder.
    half_w = 0.24 + 0.7 * np.clip((Y + 0.95) / 0.4, 0, 1) ** 0.6  # (S, 1)
    body = _soft(half_w - L, px)
    chord = np.sqrt(np.clip(1 - (L / (half_w + 0.02)) ** 2, 0, 1))
    att = body * (0.28 + 0.38 * chord)
    if p.sex == "F":
        breast = np.exp(-(((L - 0.55) / 0.25) ** 2) - ((Y - 0.42) / 0.18) ** 2)
        att = att + 0.08 * breast

    # Lungs.
    dome = np.where(right, p.right_dome, p.left_dome)
    lung_d = _lung_distance(L, Y2, dome, 1.0)
    lung = _soft(lung_d, px)
    air = lung.copy()  # how much of each pixel is aerated lung
    parenchyma = 0.05 * lung

    # Vascular markings radiating from each hilum, fading to the periphery.
    hy = -0.05
    r = np.hypot(L - 0.16, Y2 - hy)
    theta = np.arctan2(Y2 - hy, L - 0.16)
    phase = np.where(right, rng.uniform(0, 6.3), rng.uniform(0, 6.3))
    n1, n2 = rng.integers(7, 10), rng.integers(11, 15)
    wob = np.sin(r * 9.0 + rng.uniform(0, 6.3))
    v1 = np.clip(np.cos(n1 * theta + phase + 1.2 * wob), 0, 1) ** 14
    v2 = np.clip(np.cos(n2 * theta - phase + 0.8 * wob), 0, 1) ** 18
    vessels = (0.9 * v1 + 0.6 * v2) * np.exp(-r / 0.32) * np.clip(r / 0.06, 0, 1)
    hilum = np.exp(-((L - 0.2) ** 2 + ((Y2 - hy) / 1.4) ** 2) / 0.004)
    vessels = vessels + 0.8 * hilum

    # Pneumothorax: the lung collapses toward an anchor; no markings beyond the pleural line.
    if "Pneumothorax" in f:
        info = f["Pneumothorax"]
        k = info["collapse"]
        side_mask = right if info["side"] == "right" else ~right
        side_dome = p.right_dome if info["side"] == "right" else p.left_dome
        ax, ay = (0.2, 0.0) if k < 0.75 else (0.25, side_dome)
        Lc = ax + (L - ax) / k
        Yc = ay + (Y2 - ay) / k
        collapsed_d = _lung_distance(Lc, Yc, side_dome, 1.0) * k
        collapsed = _soft(collapsed_d, px)
        gap = side_mask * lung * (1 - collapsed)
        vessels = vessels * (1 - gap)
        parenchyma = parenchyma * (1 - gap) + side_mask * collapsed * lung * (0.25 * (1 - k))
        pleural_line = np.exp(-((collapsed_d / (0.9 * px)) ** 2)) * side_mask * lung
        att = att + 0.12 * pleural_line

    # Consolidation: a lobe fills with fluid (mottled), sharp at the fissures.
    if "Consolidation" in f:
        info = f["Consolidation"]
        side_mask = right if info["side"] == "right" else ~right
        lobe = info["lobe"]
        if "upper" in lobe:
            region = _soft(0.02 - Y2, px * 3)
        elif "middle" in lobe:
            region = _soft(Y2 + 0.02, px) * _soft(0.55 - L - 0.3 * Y2, px * 3)
        else:
            region = _soft(Y2 - 0.08 + 0.25 * (0.5 - L), px * 3)
        a = _upsampler(size)
        mottle = a @ rng.random((8, 8), dtype=np.float32) @ a.T
        density = (0.35 if info["uncertain"] else 0.75) * (0.7 + 0.3 * mottle)
        fill = side_mask * region * lung * density
        air = air * (1 - fill)
        vessels = vessels * (1 - 0.6 * fill)
        att = att + 0.28 * fill

    # Pleural effusion: dependent fluid with a meniscus climbing the lateral wall.
    if "Pleural Effusion" in f:
        info = f["Pleural Effusion"]
        h = info["height"]
        for side in ("right", "left") if info["side"] == "both" else (info["side"],):
            side_mask = right if side == "right" else ~right
            side_dome = p.right_dome if side == "right" else p.left_dome
            base = side_dome + 0.2  # around the costophrenic angle
            level = base - h * 1.3 - 0.25 * h * np.clip((L - 0.35) / 0.45, 0, 1) ** 2
            fluid = side_mask * np.clip((Y2 - level) / (px * 3 + 0.04 * h), 0, 1)
            # fluid fills the lung's base and the costophrenic recess
            recess = _soft(_lung_distance(L, Y2 - 0.12 * h, side_dome + 0.1, 1.0), px)
            fluid = fluid * np.maximum(lung, recess)
            air = air * (1 - fluid)
            vessels = vessels * (1 - fluid)
            att = att + 0.42 * fluid * (1 - lung) + 0.3 * fluid * lung

    # Heart and mediastinum sit in front of the lungs: they hide the air behind them.
    thoracic = 2 * 0.8
    heart_w = p.ctr * thoracic
    if "Cardiomegaly" in f:
        heart_w = f["Cardiomegaly"]["ctr"] * thoracic
    hx, hyc = heart_w / 6.0, 0.24
    heart = _soft(
        1 - np.sqrt(((X2 - hx) / (heart_w / 2)) ** 2 + ((Y2 - hyc) / 0.25) ** 2), 2 * px / heart_w
    )
    heart = heart * _soft(Y2 - 0.0, px * 4) + _soft(
        1 - np.sqrt(((X2 - hx * 0.5) / (heart_w / 2.4)) ** 2 + ((Y2 - 0.1) / 0.2) ** 2), px * 4
    )
    heart = np.clip(heart, 0, 1)
    med_w = 0.1 + 0.02 * np.clip(Y + 0.4, 0, 1)
    mediastinum = _soft(med_w - np.abs(X2 - 0.01), px) * _soft(0.4 - Y2, px)
    knob = _soft(0.065 - np.hypot(X2 - 0.11, Y2 + 0.33), px)
    central = np.clip(heart + mediastinum + knob, 0, 1)
    air = air * (1 - 0.85 * central)
    vessels = vessels * (1 - 0.7 * central)
    att = att + 0.32 * central

    # Trachea and main bronchi: air columns in the mediastinum.
    trachea = _soft(0.03 - np.abs(X2 - 0.0), px) * _soft(-0.28 - Y2, px)
    att = att - 0.12 * trachea

    # Gastric bubble under the left hemidiaphragm.
    bubble = _soft(1 - np.hypot((X2 - 0.4) / 0.12, (Y2 - p.left_dome - 0.14) / 0.06), 4 * px / 0.06)
    att = att - 0.15 * bubble * (0 if "Pleural Effusion" in f else 1)

    # Bones: spine, posterior and anterior ribs, clavicles.
    spine = _soft(0.07 - L, px) * (0.75 + 0.25 * np.cos(2 * math.pi * (Y2 / 0.1)))
    ribs_y = Y2 - (-0.62 - 0.1 * L + 0.5 * L**2)
    rib_p = ribs_y / p.rib_spacing
    frac = rib_p - np.floor(rib_p)
    ribs = _soft(0.3 - np.abs(frac - 0.3) * 2, px / p.rib_spacing * 2)
    ribs = ribs * (rib_p > 0) * (rib_p < 9.5) * _soft(0.86 - L, px) * _soft(L - 0.05, px)
    anterior_p = (Y2 + 0.7 - 0.4 * (0.9 - L)) / (p.rib_spacing * 1.2)
    afrac = anterior_p - np.floor(anterior_p)
    anterior = (
        _soft(0.2 - np.abs(afrac - 0.5), px * 6)
        * (anterior_p > 0)
        * (anterior_p < 5)
        * _soft(L - 0.3, 4 * px)
        * _soft(0.85 - L, px)
    )
    clav_y = -0.7 - 0.12 * (L - 0.1) + 0.15 * (L - 0.1) ** 2
    clavicle = _soft(0.035 - np.abs(Y2 - clav_y), px) * _soft(0.7 - L, px) * _soft(L - 0.07, px)
    att = att + 0.2 * spine + 0.15 * ribs + 0.05 * anterior + 0.22 * clavicle

    # Lung air makes the image dark; vessels and parenchyma put back some density.
    att = att - 0.5 * air + parenchyma * lung + 0.12 * vessels * lung

    # Support devices: thin radio-opaque lines (splatted points, blurred below).
    if "Support Devices" in f:
        info = f["Support Devices"]
        wire = np.zeros((size, size), dtype=np.float32)
        carina_y = -0.28

        def to_img(pts):
            return [(x * sx + study.shift_x, y * sy + study.shift_y) for x, y in pts]

        for device in info["devices"]:
            if device == "endotracheal tube":
                for off in (-0.012, 0.012):
                    xs, ys = _curve(to_img([(off, -1.05), (off, carina_y - 0.12)]), size)
                    _splat(wire, xs, ys, 0.5)
            elif device == "enteric tube":
                pts = [(0.02, -1.05), (0.03, -0.3), (0.06, 0.3), (0.2, 0.6), (0.36, 0.66)]
                xs, ys = _curve(to_img(pts), size)
                _splat(wire, xs, ys, 0.7)
            elif device == "central venous catheter":
                s = -1 if info["line_side"] == "right" else 1
                pts = [(s * 0.75, -0.62), (s * 0.35, -0.62), (s * 0.12, -0.5), (-0.05, -0.15)]
                xs, ys = _curve(to_img(pts), size)
                _splat(wire, xs, ys, 0.7)
            else:
                cx, cy = 0.55, -0.58
                box = _soft(0.07 - np.maximum(np.abs(X2 - cx) / 1.3, np.abs(Y2 - cy)), px)
                att = att + 0.6 * box
                for end in ((-0.05, 0.2), (0.02, 0.35)):
                    pts = [(cx, cy), (0.3, -0.6), (0.0, -0.35), end]
                    xs, ys = _curve(to_img(pts), size)
                    _splat(wire, xs, ys, 0.6)
        att = att + np.minimum(wire * (128.0 / size), 0.6)

    img = _blur(att.astype(np.float32))
    img = img + rng.normal(0, study.noise, size=img.shape).astype(np.float32)
    img = np.clip(img * study.contrast, 0, 1) ** study.exposure
    return (img * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------- the dataset


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of `image` (deterministic bytes)."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


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


def study_record(study: Study) -> dict:
    """A study as plain data (for debugging and tests)."""
    return asdict(study)
