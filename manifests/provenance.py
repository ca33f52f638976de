"""Provenance: no val or test patient may reach the generator or the prompts.

A generator folder records the patients whose images and reports trained it; a synthetic
manifest records, in its Parquet metadata (`cxraug.provenance`), its generator's digest and
training patients, the digest of its prompt manifest's patient -> split map and, once an
oracle filter chose its rows, what that classifier run saw (`filter`), and once the
demographic filter did, what its oracles saw (`demographic_filter`); per row the study
and patient whose report prompted it (`prompt_study_id`, `prompt_patient_id`).

`check_synthetic` is run by every consumer (train-classifier, study, report) against the
real manifest it evaluates on. A synthetic set made elsewhere, whose patients cannot be
checked, is refused unless the user explicitly accepts it (`--allow-foreign-synthetic`);
the result says which of the two happened, so reports can say so.

Models made from other models carry their source's patients: a generator fine-tuned from a
cxraug generator records both runs' patients; a classifier run records what its weights saw
(`SeenPatients`: its real train patients, its synthetic set's prompt, generator and oracle
filter patients, and its `--init-from` source's) and its validation patients (they chose
its epoch). `check_seen` refuses such a source (`--base`, `--init-from`, `--filter-with`)
when it reaches a val or test patient of the real manifest in use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import pandas as pd

from manifests.errors import UserError
from manifests.io import Manifest

PROVENANCE_KEY = "cxraug.provenance"
PROMPT_PATIENT_COLUMN = "prompt_patient_id"
CHECKED = "checked"
FOREIGN = "foreign (unchecked)"
HELD_OUT = ("val", "test")
# The filters that may choose a synthetic set's rows: their key in the provenance record ->
# (what, the flag that applies it, what it is).
FILTERS = {
    "filter": ("oracle filter", "--filter-with", "a classifier"),
    "demographic_filter": ("demographic filter", "--filter-demographics", "oracles"),
}


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


def held_out_patients(real: Manifest) -> dict[str, str]:
    """Each val or test patient of `real`'s real rows -> its split."""
    return dict(_held_out(real).items())


@dataclass(frozen=True)
class SeenPatients:
    """The patients whose data reached a model.

    `trained`: whose images or reports trained its weights, its sources' included (a base
    generator, a synthetic set's prompts, generator and oracle filter, an `--init-from`
    run). `selected`: whose images chose among its epochs (validation). `complete` is False
    when part of it cannot be checked (a synthetic set made elsewhere trained it).
    """

    trained: tuple[str, ...] = ()
    selected: tuple[str, ...] = ()
    complete: bool = True

    @classmethod
    def of(cls, trained: Iterable = (), selected: Iterable = (), complete: bool = True):
        return cls(_ids(trained), _ids(selected), bool(complete))

    def union(self, other: SeenPatients) -> SeenPatients:
        return SeenPatients.of(
            self.trained + other.trained,
            self.selected + other.selected,
            self.complete and other.complete,
        )

    def to_dict(self) -> dict:
        """As recorded (with the digest of `trained`, `patients_digest`)."""
        return {
            "patients": list(self.trained),
            "n_patients": len(self.trained),
            "digest": patients_digest(self.trained),
            "val_patients": list(self.selected),
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, data: object, where: str) -> SeenPatients:
        """Read `to_dict`'s record back; UserError naming `where` when it is damaged."""
        ok = isinstance(data, dict)
        trained = data.get("patients") if ok else None
        selected = data.get("val_patients", []) if ok else None
        if not all(
            isinstance(x, list) and all(isinstance(p, str) for p in x) for x in (trained, selected)
        ):
            raise UserError(f"{where}: no list of patient ids; the record is corrupt")
        if data.get("digest") != patients_digest(trained):
            raise UserError(f"{where}: the patient list does not match its digest; corrupt")
        return cls.of(trained, selected, data.get("complete", True) is not False)


def _ids(patients: Iterable) -> tuple[str, ...]:
    return tuple(sorted({str(p) for p in patients}))


def check_seen(
    held: Mapping[str, str],
    seen: SeenPatients,
    where: str,
    source: str,
    hint: str,
    allow_incomplete: bool = False,
    allow_flag: str | None = None,
) -> str:
    """`CHECKED` when a model that saw `seen` reaches no val/test patient of the manifest
    `source` (whose val/test patients are `held`, `held_out_patients`); `FOREIGN` when
    `seen` is incomplete and `allow_incomplete`; else one UserError starting `where: `.

    Refused: a trained patient in val or test, a validation patient in test, or (unless
    allowed; `allow_flag` is the flag that allows it) a `seen` that is incomplete.
    """
    if not seen.complete and not allow_incomplete:
        fix = f"pass {allow_flag} to use it unchecked" if allow_flag else "use one cxraug made"
        raise UserError(
            f"{where}: what trained it cannot be checked (a synthetic set made elsewhere, or "
            f"inputs moved or changed since it ran); {fix}"
        )
    trained = [p for p in seen.trained if p in held]
    if trained:
        raise UserError(
            f"{where}: trained on {len(trained)} val/test patients of {source} (e.g. patient "
            f"{trained[0]}, {held[trained[0]]}); {hint}"
        )
    chose = [p for p in seen.selected if held.get(p) == "test"]
    if chose:
        raise UserError(
            f"{where}: chose its best epoch on {len(chose)} test patients of {source} (e.g. "
            f"patient {chose[0]}); {hint}"
        )
    return CHECKED if seen.complete else FOREIGN


def synthetic_seen(synthetic: Manifest) -> SeenPatients:
    """What a synthetic set brings to a model trained on it: its prompt and generator
    patients (trained); incomplete when its provenance cannot be checked."""
    record = read_record(synthetic)
    rows = synthetic.rows[synthetic.rows["source"] == "synthetic"]
    prompted = rows.get(PROMPT_PATIENT_COLUMN)
    if record is None or record.get("generator_patients") is None or prompted is None:
        return SeenPatients(complete=False)
    seen = SeenPatients.of([*record["generator_patients"], *prompted.dropna().astype(str)])
    for key in FILTERS:
        if record.get(key):
            seen = seen.union(SeenPatients.from_dict(record[key], PROVENANCE_KEY))
    return seen


def with_filter(synthetic: Manifest, run: str, seen: SeenPatients, key: str = "filter") -> Manifest:
    """The synthetic set with what its filter (`key` of `FILTERS`: the oracle classifier run,
    or the demographic oracles' folder `run`) saw in its provenance record; a set without
    one is returned as is (it is foreign already)."""
    record = read_record(synthetic)
    if record is None:
        return synthetic
    record[key] = {"run": run, **seen.to_dict()}
    metadata = {**synthetic.metadata, PROVENANCE_KEY: json.dumps(record, sort_keys=True)}
    return replace(synthetic, metadata=metadata)


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
    status = CHECKED
    for key, (what, flag, model) in FILTERS.items():
        oracle = record.get(key)
        if not oracle:
            continue
        found = check_seen(
            dict(held.items()),
            SeenPatients.from_dict(oracle, f"{where} ({PROVENANCE_KEY})"),
            where=f"{where}: its {what} ({flag} {oracle.get('run')})",
            source="the real manifest",
            hint=f"filter with {model} trained on the train split of the same split manifest",
            allow_incomplete=allow_foreign,
            allow_flag="--allow-foreign-synthetic",
        )
        status = FOREIGN if found == FOREIGN else status
    return status
