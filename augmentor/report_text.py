"""Reading radiology report text: which side a finding is on, whether a sentence negates
it, which lobe a report names.

One reading of report (and prompt) text for everyone: training (`augmentor.balance` draws
rare sides and lobes more often) and evaluation (`augmentor.generator_metrics` scores the
side a prompt states; `augmentor.generator_report` groups samples by it) import it from
here. Sides are the patient's.
"""

from __future__ import annotations

import re

# Labels whose findings have a side, and the word that names them in report sentences.
LATERAL_LABELS = {
    "Pleural Effusion": r"effusion",
    "Pneumothorax": r"pneumothorax",
    "Consolidation": r"consolidation",
}
NEGATION = re.compile(r"^\s*(no|without|negative for|resolved|resolution of)\b", re.IGNORECASE)
LOBE = re.compile(r"(right|left) (upper|middle|lower) lobe|lingula", re.IGNORECASE)


def is_negated(sentence: str) -> bool:
    """True when a sentence opens by negating what it names ("No pneumothorax.")."""
    return bool(NEGATION.search(sentence))


def stated_side(text: str | None, label: str) -> str | None:
    """The side a report/prompt gives for `label`: 'left', 'right', 'both' or None.

    Looks at sentences naming the finding that are not negated ("No pneumothorax.");
    'bilateral'/'both' or both side words give 'both'. Sides are the patient's.
    """
    if not isinstance(text, str) or label not in LATERAL_LABELS:
        return None
    word = re.compile(LATERAL_LABELS[label], re.IGNORECASE)
    for sentence in re.split(r"[.;\n]", text):
        if not word.search(sentence) or is_negated(sentence):
            continue
        lower = sentence.lower()
        if re.search(r"\b(bilateral|both|bibasilar)\b", lower):
            return "both"
        left, right = bool(re.search(r"\bleft\b", lower)), bool(re.search(r"\bright\b", lower))
        if left and right:
            return "both"
        if left or right:
            return "left" if left else "right"
    return None


def named_lobe(text: str | None) -> str | None:
    """The first lobe (or 'lingula') a report names, lower case; None without one."""
    match = LOBE.search(text or "")
    return match.group(0).lower() if match else None


__all__ = ["LATERAL_LABELS", "LOBE", "NEGATION", "is_negated", "named_lobe", "stated_side"]
