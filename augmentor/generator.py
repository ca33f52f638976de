"""The generator folder (placeholder until the finetune restructure lands)."""

from __future__ import annotations

from pathlib import Path

from manifests.files import read_json

PATIENTS_FILE = "training_patients.json"


def training_patients(model_dir: Path) -> list[str] | None:
    """The patients whose images trained the generator, or None if it does not say."""
    path = Path(model_dir) / PATIENTS_FILE
    if not path.is_file():
        return None
    return [str(p) for p in read_json(path, "generator training patients")["patients"]]
