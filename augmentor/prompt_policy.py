"""Prompt hygiene: what of a real report may become a generator's prompt (named policies).

Synthesis prompts the generator with real train reports (RoentGen's method). Real reports
carry de-identification markers, dates, times and the names of the people and places
results were communicated to; prompts holding MIMIC's ``___`` markers are the ones a
fine-tuned generator memorizes most ("The Devil is in the Prompts", arXiv 2502.07516), and
none of that text says anything about the image. A policy maps a report to its prompt and
counts what it removed, per rule; policies are pure functions of the text.

Policies:

* ``clean`` (the default): the rules below, in this order, then the tidy-up.
* ``raw``: the report as written (what RoentGen did); every count is 0.

Rules of ``clean`` (each example: report text -> prompt):

1. ``communication``: a sentence saying results were communicated (discussed with,
   communicated to, notified, paged, informed, conveyed, relayed, telephoned, reviewed
   with, posted to a dashboard, d/w, ... was called) is dropped from the clause break
   (comma, semicolon, colon, dash) before that verb, or whole when it has none:
   ``"Small left effusion. Findings were discussed with Dr. ___ at 10:45 on ___."`` ->
   ``"Small left effusion."``; ``"Large right pneumothorax, discussed with Dr. X."`` ->
   ``"Large right pneumothorax."``
2. ``person``: a title (Dr, Drs, Doctor, Mr, Mrs, Ms, Prof) with the name or marker after
   it, and a preposition before it: ``"Tube repositioned per Dr. Smith."`` ->
   ``"Tube repositioned."``; ``"Dr. ___"`` -> ``""``.
3. ``place``: a named or de-identified hospital, medical center, clinic or infirmary, with
   its preposition and a following report/records/film/study/radiologist/read:
   ``"ET tube 4 cm above the carina per the ___ hospital report."`` ->
   ``"ET tube 4 cm above the carina."``
4. ``date``: dates with their preposition (on, dated, from, of, since, in) and article:
   ``12/03/2019``, ``12-03-2019``, ``2019-03-12``, ``March 3, 2019``, ``Mar. 3rd``,
   ``3 March 2019``, ``the 3rd of March``, ``March 2019``, and ``on 3/12``:
   ``"Unchanged from the study of 2019-03-12."`` -> ``"Unchanged from the study."``
5. ``time``: clock times with their preposition (at, around, approximately, about, by):
   ``10:45``, ``10:45 AM``, ``10:45:30``, ``9 p.m.``, ``0930 hours``, ``at 0930``:
   ``"Portable film obtained at 0930."`` -> ``"Portable film obtained."``
6. ``deid_marker``: de-identification markers, MIMIC-CXR's ``___`` (any run of two or more
   underscores) and MIMIC-III's ``[**...**]``. After "compared to/with", "comparison
   to/with" or "relative to" a marker becomes ``prior`` (the radiologist's own word):
   ``"Compared to ___, the effusion is smaller."`` -> ``"Compared to prior, the effusion
   is smaller."``; after another preposition (on, of, from, dated, since, at, in, by, with,
   to, for, per) it goes with its preposition: ``"Unchanged since ___."`` -> ``"Unchanged."``;
   elsewhere it is removed.

Tidy-up (always, under ``clean``; not counted): whitespace runs (newlines of hard-wrapped
reports included) become one space, spaces before punctuation and empty parentheses go,
runs of punctuation left by a removal become one mark (``", ."`` -> ``"."``), and leading
punctuation is dropped. Text without any of the above comes out byte-identical (the
phantom reports do: `tests/test_prompt_policy.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from manifests.errors import UserError

CLEAN = "clean"
RAW = "raw"
POLICIES: tuple[str, ...] = (CLEAN, RAW)
DEFAULT_POLICY = CLEAN
DESCRIPTIONS: dict[str, str] = {
    CLEAN: (
        "strips de-identification markers, dates, times, names of people and places, and "
        "sentences communicating results (augmentor.prompt_policy)"
    ),
    RAW: "keeps the reports as written (RoentGen's method)",
}

# ------------------------------------------------------------------------------ patterns

_MARKER = r"(?:_{2,}|\[\*\*[^\]]*?\*\*\])"
_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)(?:\.(?=\s*\d))?"  # "Mar. 3"
)
_DAY = r"(?:[0-2]?\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"

# Sentence breaks: after . ! ? and whitespace, but not after a title's period ("Dr. X").
_SENTENCE_BREAK = re.compile(
    r"(?<=[.!?])(?<!\bDr\.)(?<!\bdr\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bMrs\.)(?<!\bDrs\.)"
    r"(?<!\bProf\.)\s+"
)
_COMMUNICATION = re.compile(
    r"(?i:\b(?:discussed|communicated|conveyed|relayed|notified|informed|paged|telephoned|"
    r"reviewed\s+with|posted|dashboard|d/w)\b|\b(?:was|were)\s+called\b)"
)
_CLAUSE_BREAK = re.compile(r"[,;:]\s|\s[-\u2013\u2014]+\s")

_TITLE = r"\b(?:Dr|DR|dr|Drs|Doctor|doctor|Mr|Mrs|Ms|Prof|Professor)\b"  # not MR, MS
_PERSON = re.compile(
    r"(?:\b(?i:per|by|with|to|from|for)\s+)?" + _TITLE + r"\.?\s*"
    r"(?:" + _MARKER + r"|(?:[A-Z]\.\s*)?[A-Z][A-Za-z'\-]*(?:\s+[A-Z][a-z][A-Za-z'\-]*)?)"
)
_PLACE = re.compile(
    r"(?:\b(?i:per|at|from|to|in|by|of)\s+)?(?:\b(?i:the)\s+)?"
    r"(?:" + _MARKER + r"|\b(?:[A-Z][\w'\-]*\s+){1,3})\s*"
    r"(?i:hospital|medical\s+center|clinic|infirmary)\b"
    r"(?:\s+(?i:report|records?|radiologist|films?|study|read))?"
)
_DATE = re.compile(
    r"(?:\b(?i:on|dated|from|of|since|in)\s+)?(?:\b(?i:the)\s+)?(?:"
    r"\b\d{1,2}/\d{1,2}/\d{2,4}\b"  # 12/03/2019
    r"|\b\d{1,2}-\d{1,2}-(?:\d{4}|\d{2})\b"  # 12-03-2019
    r"|\b" + _YEAR + r"[-/.]\d{1,2}[-/.]\d{1,2}\b"  # 2019-03-12
    r"|\b" + _MONTH + r"\s+" + _DAY + r"\b(?:,?\s+" + _YEAR + r"\b)?"  # March 3, 2019
    r"|\b" + _DAY + r"\s+(?:of\s+)?" + _MONTH + r"(?:,?\s+" + _YEAR + r"\b)?"  # 3rd of March
    r"|\b" + _MONTH + r",?\s+" + _YEAR + r"\b"  # March 2019
    r")"
    r"|\b(?i:on|dated|since)\s+\d{1,2}/\d{1,2}\b"  # on 3/12
)
# "a.m." leaves its last period: it may also end the sentence.
_AMPM = r"(?:[AaPp]\.?\s?[Mm](?![A-Za-z]))"
_TIME = re.compile(
    r"(?:\b(?i:at|around|approximately|about|by)\s+)?(?:"
    r"\b(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:\s*" + _AMPM + r"|\s*(?i:hours|hrs|h)\b)?"
    r"|\b(?:1[0-2]|0?[1-9])\s*"
    + _AMPM  # 9 p.m.
    + r"|\b(?:[01]\d|2[0-3])[0-5]\d\s*(?i:hours|hrs|h)\b"  # 0930 hours
    r")"
    r"|\b(?i:at)\s+(?:[01]\d|2[0-3])[0-5]\d\b(?!\s*(?i:cc|ml|mm|cm|mg|units)\b)"  # at 0930
)
_MARKER_AFTER_COMPARISON = re.compile(
    r"\b((?i:compared\s+(?:to|with)|comparison\s+(?:to|with)|relative\s+to)\s+(?:(?i:the)\s+)?)"
    + _MARKER
)
_MARKER_AFTER_PREPOSITION = re.compile(
    r"\b(?i:on|of|from|dated|since|at|in|by|with|to|for|per)\s+(?:(?i:the)\s+)?" + _MARKER
)
_MARKER_ALONE = re.compile(r"\s?" + _MARKER)
# What each rule's matches cannot do without: a text without it skips the rule (speed only).
_HINTS: dict[str, re.Pattern] = {
    "communication": _COMMUNICATION,
    "person": re.compile(_TITLE),
    "place": re.compile(r"(?i:hospital|medical\s+center|clinic|infirmary)"),
    "date": re.compile(r"\d"),
    "time": re.compile(r"\d"),
    "deid_marker": re.compile(_MARKER),
}

_TIDY: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\s+"), " "),
    (re.compile(r"\(\s*\)"), ""),
    (re.compile(r"\s+(?:and|or)(?=\s*[.,;:!?])"), ""),  # "from X and Y." -> "from."
    (re.compile(r"(?<=[.!?:])\s+\d{1,2}\.(?=\s*$|\s+\d{1,2}\.\s)"), ""),  # a bare "2."
    (re.compile(r"\s+([.,;:!?)])"), r"\1"),
    (re.compile(r"[,;:]+(?:\s*[,;:]+)*\s*([.!?])"), r"\1"),  # "effusion, ." -> "effusion."
    (re.compile(r"([.!?])(?:\s*[.,;:!?])+"), r"\1"),  # ". ." or ". ," -> "."
    (re.compile(r"([,;:])(?:\s*[,;:])+"), r"\1"),  # ", ," -> ","
    (re.compile(r"^[\s.,;:!?]+"), ""),
    (re.compile(r"\s+"), " "),
)

# ------------------------------------------------------------------------------ rules


def _drop_communication(text: str) -> tuple[str, int]:
    """Each sentence's communication clause, or the whole sentence when it has no clause
    break before the verb (rule 1)."""
    sentences = _SENTENCE_BREAK.split(text)
    kept, n = [], 0
    for sentence in sentences:
        verb = _COMMUNICATION.search(sentence)
        if verb is None:
            kept.append(sentence)
            continue
        n += 1
        breaks = list(_CLAUSE_BREAK.finditer(sentence, 0, verb.start()))
        head = sentence[: breaks[-1].start()].rstrip() if breaks else ""
        if re.search(r"[a-z]", head):  # a finding, not a header ("NOTIFICATION:")
            kept.append(head + ".")
    return " ".join(kept), n


def _sub(pattern: re.Pattern, replacement: str | Callable) -> Callable[[str], tuple[str, int]]:
    return lambda text: pattern.subn(replacement, text)


def _markers(text: str) -> tuple[str, int]:
    """Markers become `prior` after a comparison, go with another preposition, else go
    (rule 6)."""
    text, a = _MARKER_AFTER_COMPARISON.subn(r"\1prior", text)
    text, b = _MARKER_AFTER_PREPOSITION.subn("", text)
    text, c = _MARKER_ALONE.subn("", text)
    return text, a + b + c


_CLEAN_RULES: dict[str, Callable[[str], tuple[str, int]]] = {
    "communication": _drop_communication,
    "person": _sub(_PERSON, ""),
    "place": _sub(_PLACE, ""),
    "date": _sub(_DATE, ""),
    "time": _sub(_TIME, ""),
    "deid_marker": _markers,
}
RULES: tuple[str, ...] = tuple(_CLEAN_RULES)  # in the order they apply


def tidy(text: str) -> str:
    """Whitespace and punctuation left by removals (see the module docstring)."""
    for pattern, replacement in _TIDY:
        text = pattern.sub(replacement, text)
    return text.strip()


# ------------------------------------------------------------------------------ policies


def check_policy(name: str, flag: str = "--prompt-policy") -> str:
    """The policy's canonical name; UserError naming `flag` and the valid names."""
    key = str(name).strip().lower()
    if key not in POLICIES:
        raise UserError(f"{flag}: unknown {name!r}; valid: {', '.join(POLICIES)}")
    return key


def no_counts() -> dict[str, int]:
    """Every rule with a count of 0."""
    return dict.fromkeys(RULES, 0)


def clean_report(text: str) -> tuple[str, dict[str, int]]:
    """The `clean` policy: (prompt, {rule: occurrences removed}); see the module docstring."""
    counts = no_counts()
    for rule, apply in _CLEAN_RULES.items():
        if _HINTS[rule].search(text):
            text, counts[rule] = apply(text)
    return tidy(text), counts


def apply_policy(text: str, policy: str = DEFAULT_POLICY) -> tuple[str, dict[str, int]]:
    """A report made a prompt under `policy`: (prompt, {rule: occurrences removed})."""
    if check_policy(policy) == RAW:
        return text, no_counts()
    return clean_report(text)


def apply_policy_many(
    texts: Iterable[str], policy: str = DEFAULT_POLICY
) -> tuple[list[str], list[dict[str, int]]]:
    """`apply_policy` over many reports, each distinct text cleaned once."""
    policy = check_policy(policy)
    done: dict[str, tuple[str, dict[str, int]]] = {}
    prompts, counts = [], []
    for text in texts:
        if text not in done:
            done[text] = apply_policy(text, policy)
        prompt, removed = done[text]
        prompts.append(prompt)
        counts.append(removed)
    return prompts, counts


def add_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per-rule totals of several prompts' counts."""
    total = no_counts()
    for one in counts:
        for rule, n in one.items():
            total[rule] = total.get(rule, 0) + int(n)
    return total


def describe(
    policy: str, removed: Mapping[str, int] | None = None, prompts: int | None = None
) -> str:
    """One line for a dataset card: the policy, what it does and, when given, what it
    removed over how many prompts."""
    policy = check_policy(policy)
    line = f"`{policy}`: {DESCRIPTIONS[policy]}"
    if removed is not None:
        what = ", ".join(f"{rule} {int(removed.get(rule, 0))}" for rule in RULES)
        over = f" over {prompts} drawn report prompt(s)" if prompts is not None else ""
        line += f"; removed{over}: {what}"
    return line + "."


__all__ = [
    "CLEAN",
    "DEFAULT_POLICY",
    "DESCRIPTIONS",
    "POLICIES",
    "RAW",
    "RULES",
    "add_counts",
    "apply_policy",
    "apply_policy_many",
    "check_policy",
    "clean_report",
    "describe",
    "no_counts",
    "tidy",
]
