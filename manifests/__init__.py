"""Manifests: the data contract of cxraug (schema, Parquet I/O, importers, splits, mixing, phantoms)."""

from manifests.errors import UserError
from manifests.files import atomic_path, write_json
from manifests.io import (
    Manifest,
    concat_manifests,
    filter_manifest,
    label_prevalence,
    read_manifest,
    write_manifest,
)
from manifests.schema import CHEXPERT_LABELS, LABEL_SETS, NIH_LABELS, label_set, resolve_label
from manifests.splits import check_leakage, split_by_patient

__all__ = [
    "CHEXPERT_LABELS",
    "LABEL_SETS",
    "NIH_LABELS",
    "Manifest",
    "UserError",
    "atomic_path",
    "check_leakage",
    "concat_manifests",
    "filter_manifest",
    "label_prevalence",
    "label_set",
    "read_manifest",
    "resolve_label",
    "split_by_patient",
    "write_json",
    "write_manifest",
]
