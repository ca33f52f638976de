"""Provenance: no val or test patient may reach the generator or the prompts.

A generator folder records the patients whose images and reports trained it; a synthetic
manifest records, in its Parquet metadata (`cxraug.provenance`), its generator's digest and
training patients and the digest of its prompt manifest's patient -> split map, and per row
the study and patient whose report prompted it (`prompt_study_id`, `prompt_patient_id`).

`check_synthetic` is run by every consumer (train-classifier, study, report) against the
real manifest it evaluates on. A synthetic set made elsewhere, whose patients cannot be
checked, is refused unless the user explicitly accepts it (`--allow-foreign-synthetic`);
the result says which of the two happened, so reports can say so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import pandas as pd

from manifests.errors import UserError
from manifests.io import Manifest

PROVENANCE_KEY = "cxraug.provenance"
PROMPT_PATIENT_COLUMN = "prompt_patient_id"
CHECKED = "checked"
FOREIGN = "foreign (unchecked)"
HELD_OUT = ("val", "test")


def patients_digest(patients: Iterable[str]) -> str:
    """SHA-256 (hex) over the sorted, distinct patient ids, one per line, UTF-8.

    The one patient digest: a generator folder's `training_patients.json` and a synthetic
    manifest's provenance record it.
    """
    text = "\n".join(sorted({str(p) for p in patients}))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_map_digest(manifest: Manifest) -> str:
    """SHA-256 over the real rows' patient -> split map (sorted `patient\\tsplit` lines)."""
    rows = manifest.rows[manifest.rows["source"] == "real"]
    pairs = sorted(set(zip(rows["patient_id"].astype(str), rows["split"].astype(str), strict=True)))
    text = "\n".join(f"{p}\t{s}" for p, s in pairs)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def require_patient_split(manifest: Manifest, where: str) -> None:
    """Refuse a manifest that was never split by patient (no real val or test rows)."""
    real = manifest.rows[manifest.rows["source"] == "real"]
    if not real["split"].isin(HELD_OUT).any():
        raise UserError(
            f"{where}: never split by patient (no val or test rows), so test patients could "
            "reach the generator or the prompts; split it first: cxraug manifest split "
            "MANIFEST --out SPLIT_MANIFEST"
        )


def train_patients(manifest: Manifest) -> list[str]:
    """The sorted patient ids of the real train rows."""
    rows = manifest.rows
    train = rows[(rows["source"] == "real") & (rows["split"] == "train")]
    return sorted(set(train["patient_id"].astype(str)))


def synthetic_record(
    generator_digest: str,
    generator_patients: list[str] | None,
    prompt_manifest: Manifest,
    generator_base: str | None = None,
) -> dict:
    """The `cxraug.provenance` metadata of a synthetic manifest (`generator_base`: the base
    the generator was fine-tuned from, where its folder records it)."""
    return {
        "generator_digest": generator_digest,
        "generator_patients": generator_patients,
        "generator_patients_digest": (
            patients_digest(generator_patients) if generator_patients is not None else None
        ),
        "generator_base": generator_base,
        "prompt_split_digest": split_map_digest(prompt_manifest),
    }


def read_record(synthetic: Manifest) -> dict | None:
    raw = synthetic.metadata.get(PROVENANCE_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _held_out(real: Manifest) -> pd.Series:
    rows = real.rows[(real.rows["source"] == "real") & real.rows["split"].isin(HELD_OUT)]
    first = rows.drop_duplicates("patient_id")
    return pd.Series(
        first["split"].astype(str).to_numpy(), index=first["patient_id"].astype(str).to_numpy()
    )


def check_synthetic(
    real: Manifest, synthetic: Manifest, allow_foreign: bool = False, where: str = "--synthetic"
) -> str:
    """`CHECKED` if no prompt or generator patient of `synthetic` is a val/test patient of
    `real`; `FOREIGN` if that cannot be checked and `allow_foreign`; else UserError.
    """
    held = _held_out(real)
    record = read_record(synthetic)
    rows = synthetic.rows[synthetic.rows["source"] == "synthetic"]
    prompt_patients = rows.get(PROMPT_PATIENT_COLUMN)
    checkable = (
        record is not None
        and record.get("generator_patients") is not None
        and prompt_patients is not None
    )
    if not checkable:
        if allow_foreign:
            return FOREIGN
        raise UserError(
            f"{where}: its provenance cannot be checked (no generator training patients or "
            f"prompt patients recorded: made elsewhere or by an older cxraug); pass "
            "--allow-foreign-synthetic to use it unchecked"
        )
    prompted = prompt_patients.astype("string")
    bad = prompted.isin(held.index).fillna(False).to_numpy()
    if bad.any():
        first = rows.iloc[int(bad.argmax())]
        patient = str(first[PROMPT_PATIENT_COLUMN])
        raise UserError(
            f"{where}: {int(bad.sum())} of {len(rows)} rows were prompted by reports of "
            f"val/test patients of the real manifest (e.g. {first['image_path']}: patient "
            f"{patient}, {held[patient]}); synthesize with --prompts-from the same split "
            "manifest"
        )
    leaked = sorted(set(record["generator_patients"]) & set(held.index))
    if leaked:
        raise UserError(
            f"{where}: its generator was trained on {len(leaked)} val/test patients of the "
            f"real manifest (e.g. patient {leaked[0]}, {held[leaked[0]]}); fine-tune on the "
            "train split of the same split manifest"
        )
    return CHECKED
