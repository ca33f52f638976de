"""Dataset importers: one module per source, each `source files -> Manifest`.

    import_mimic_cxr(root, reports=None, labeler="chexpert", ...)   MIMIC-CXR-JPG
    import_chexpert(root, ...)                                      CheXpert v1.0(-small)
    import_nih(root, csv=None, ...)                                 NIH ChestX-ray14
    import_folder(root, labels_csv=None, ...)                       any image folder + CSV

Every importer also takes `label_set` ('chexpert' or 'nih'; default the dataset's own),
`frontal_only` and `check_images`, stores absolute image paths, keeps a dataset's official
split in the `official_split` column (rows' `split` is that split, else 'train' until
`cxraug manifest split`), and leaves what a user should know in the `cxraug.notes`
metadata. :func:`import_dataset` runs one by name and writes the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from manifests.errors import UserError
from manifests.importers.chexpert import import_chexpert
from manifests.importers.common import import_summary, manifest_notes, relabel, report_section
from manifests.importers.folder import import_folder
from manifests.importers.mimic import import_mimic_cxr
from manifests.importers.nih import import_nih
from manifests.io import Manifest, write_manifest

IMPORTERS: dict[str, Callable[..., Manifest]] = {
    "mimic-cxr": import_mimic_cxr,
    "chexpert": import_chexpert,
    "nih": import_nih,
    "folder": import_folder,
}


def import_dataset(kind: str, out: Path, overwrite: bool = False, **options) -> Manifest:
    """Run the importer `kind` with `options` and write its manifest to `out` (atomic).

    An existing `out` is refused before any scanning unless `overwrite`.
    """
    if kind not in IMPORTERS:
        raise UserError(f"unknown dataset {kind!r}; valid: {', '.join(IMPORTERS)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    manifest = IMPORTERS[kind](**options)
    write_manifest(manifest, out, overwrite=overwrite)
    return manifest


__all__ = [
    "IMPORTERS",
    "import_chexpert",
    "import_dataset",
    "import_folder",
    "import_mimic_cxr",
    "import_nih",
    "import_summary",
    "manifest_notes",
    "relabel",
    "report_section",
]
