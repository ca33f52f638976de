"""Phantom reports: impression and findings text in radiology language from a study.

Positive findings in varied phrasing, hedged ones ("possible small left effusion"), and the
four main findings always stated, positively or as an explicit negative ("No pneumothorax.").
A study marked `header` starts its impression with the patient's age and sex
("72-year-old woman."), as real reports do, unless the impression is too long to take it
within CLIP's 77 tokens (`HEADER_MAX_WORDS`).
"""

from __future__ import annotations

import numpy as np

from manifests.demographics import demographic_phrase
from manifests.phantom.findings import PATHOLOGIES, Study

NAMES = {"central venous catheter": "central line"}  # short names for device lists
# The header ("72-year-old woman.", about 8 CLIP tokens) goes only on impressions of at most
# this many words, so that every prompt fits CLIP's 77 tokens (it skips about 1 in 4000).
HEADER_MAX_WORDS = 40


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
    if study.header and sum(len(s.split()) for s in impression) <= HEADER_MAX_WORDS:
        impression.insert(0, demographic_phrase(study.patient.sex, study.age))
    view = "Portable AP" if study.view == "AP" else "PA"
    findings = " ".join(
        [f"{view} view of the chest.", *positives, *negatives, "No acute osseous abnormality."]
    )
    return " ".join(impression), findings
