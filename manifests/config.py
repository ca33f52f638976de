"""Configurations of the data commands (`demo-data`, `manifest split`): defaults and help.

Torch-free and pandas-free: the CLI builds its options from these dataclasses' fields
(`manifests.settings`); the work is `manifests.phantom.write_phantom_dataset` and
`manifests.splits.split_by_patient`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from manifests.settings import REPLACE_HELP, SEED_HELP, setting


@dataclass
class DemoDataConfig:
    """`cxraug demo-data`: the embedded phantom dataset (arguments of write_phantom_dataset)."""

    out: Path = setting(argument=True, help="Output folder for PNGs and manifest.parquet.")
    n: int = setting(2000, help="Number of images.")
    size: int = setting(128, help="Image side in pixels.")
    patients: int | None = setting(None, help="Patients (default: n/3, several studies each).")
    seed: int = setting(0, help=SEED_HELP)
    overwrite: bool = setting(False, help=REPLACE_HELP)


@dataclass
class SplitConfig:
    """`cxraug manifest split`: a patient-disjoint, label-stratified train/val/test split."""

    manifest: Path = setting(argument=True, help="A manifest (.parquet).")
    out: Path | None = setting(
        None, flag=("--out", "-o"), help="Output manifest (default: update in place)."
    )
    fractions: str = setting("0.8,0.1,0.1", help="train,val,test shares of patients.")
    seed: int = setting(0, help=SEED_HELP)
    no_official: bool = setting(False, help="Ignore the dataset's official split.")
    overwrite: bool = setting(False, help=REPLACE_HELP)


__all__ = ["DemoDataConfig", "SplitConfig"]
