"""Manifests: the data contract of cxraug (schema, Parquet I/O, importers, splits, mixing, phantoms).

The names below load on first use (PEP 562), so `from manifests.errors import UserError`
does not import pandas: the CLI answers a bad flag before any heavy import.
"""

from __future__ import annotations

import importlib

from manifests.errors import UserError

_LAZY = {
    "Manifest": "manifests.io",
    "atomic_path": "manifests.files",
    "concat_manifests": "manifests.io",
    "filter_manifest": "manifests.io",
    "label_prevalence": "manifests.io",
    "read_manifest": "manifests.io",
    "write_json": "manifests.files",
    "write_manifest": "manifests.io",
    "CHEXPERT_LABELS": "manifests.schema",
    "LABEL_SETS": "manifests.schema",
    "NIH_LABELS": "manifests.schema",
    "label_set": "manifests.schema",
    "resolve_label": "manifests.schema",
    "check_leakage": "manifests.splits",
    "split_by_patient": "manifests.splits",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'manifests' has no attribute {name!r}")


__all__ = ["UserError", *_LAZY]
