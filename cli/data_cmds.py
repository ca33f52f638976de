"""`cxraug demo-data` and the `cxraug manifest` group: summary, export, split and
`manifest import` (mimic-cxr, chexpert, nih, folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from classifier.tables import print_frame
from cli.app import (
    FrontalOnly,
    ManifestArg,
    OutManifest,
    Overwrite,
    Seed,
    app,
    console,
    import_app,
    manifest_app,
)

# ---------------------------------------------------------------- manifests (issue 2)


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Output folder for PNGs and manifest.parquet.")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 2000,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    patients: Annotated[
        int | None,
        typer.Option("--patients", help="Patients (default: n/3, several studies each)."),
    ] = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Draw the embedded phantom CXR dataset (a demo and test fixture, not clinical data)."""
    from manifests.phantom import write_phantom_dataset

    path = write_phantom_dataset(
        out, n=n, size=size, seed=seed, patients=patients, overwrite=overwrite
    )
    console.print(f"wrote {n} phantom images and {path}")


@manifest_app.command("summary")
def manifest_summary(manifest: ManifestArg) -> None:
    """Rows per split and source, and label prevalence."""
    from manifests.io import read_manifest
    from manifests.summary import summarize

    summary = summarize(read_manifest(manifest), where=str(manifest))
    print_frame(summary.counts, f"{manifest}: images and patients", out=console)
    print_frame(summary.prevalence, "label prevalence (positive / uncertain share)", out=console)
    if summary.not_labelled:
        console.print(
            f"not labelled by the source ({len(summary.not_labelled)}, all NaN; not counted "
            f"as negative): {', '.join(summary.not_labelled)}"
        )
    for note in summary.notes:
        console.print(f"note: {note}")


@manifest_app.command("export")
def manifest_export(
    manifest: ManifestArg,
    to: Annotated[Path, typer.Option("--to", help="Output folder (must not exist).")],
    format: Annotated[
        str, typer.Option("--format", help="imagefolder: Hugging Face datasets' image folder.")
    ] = "imagefolder",
    generator_eval: Annotated[
        Path | None,
        typer.Option(
            "--generator-eval",
            help="evaluate-generator folder whose memorization audit goes in the card "
            "(default: one found beside the manifest).",
        ),
    ] = None,
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy images (default: hard-link where possible).")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Export as a dataset folder with a dataset card (provenance, counts, licence)."""
    from augmentor.card import synthesis_provenance
    from manifests.export import export_manifest

    provenance = synthesis_provenance(manifest, generator_eval)
    result = export_manifest(manifest, to, format, overwrite, provenance, link=not copy)
    splits = ", ".join(f"{name} {n}" for name, n in result.counts.items())
    console.print(
        f"wrote {result.folder} ({splits}; {result.linked} linked, {result.copied} copied, "
        f"{result.converted} converted to PNG) and its README.md dataset card"
    )
    console.print(f'load: datasets.load_dataset("imagefolder", data_dir="{result.folder}")')


@manifest_app.command("split")
def manifest_split(
    manifest: ManifestArg,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output manifest (default: update in place).")
    ] = None,
    fractions: Annotated[
        str, typer.Option("--fractions", help="train,val,test shares of patients.")
    ] = "0.8,0.1,0.1",
    seed: Seed = 0,
    no_official: Annotated[
        bool, typer.Option("--no-official", help="Ignore the dataset's official split.")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Patient-disjoint, label-stratified train/val/test split (keeps official splits)."""
    from manifests.io import read_manifest, write_manifest
    from manifests.splits import parse_fractions, split_by_patient, split_counts

    shares = parse_fractions(fractions)
    result = split_by_patient(
        read_manifest(manifest), shares, seed=seed, keep_official=not no_official
    )
    target = out or manifest
    write_manifest(result, target, overwrite=overwrite or out is None)
    print_frame(split_counts(result), f"{target}: split (seed {seed})", out=console)


# ---------------------------------------------------------------- importers (issue 2)

ImportRoot = Annotated[Path, typer.Option("--root", help="The dataset's folder.")]
ImportLabelSet = Annotated[
    str | None,
    typer.Option(
        "--label-set",
        help="chexpert or nih (default: the dataset's own). Labels of the other set map where "
        "names correspond (Effusion = Pleural Effusion); the rest are NaN.",
    ),
]
CheckImages = Annotated[
    bool,
    typer.Option("--check-images", help="Decode every image (slow); default: check they exist."),
]


def _import(kind: str, out: Path, overwrite: bool, **options) -> None:
    """Run one importer, write its manifest, print one summary line and its notes."""
    from manifests.importers import import_dataset, import_summary, manifest_notes

    manifest = import_dataset(kind, out, overwrite=overwrite, **options)
    console.print(f"wrote {out}: {import_summary(manifest)}")
    for note in manifest_notes(manifest):
        console.print(f"note: {note}")


@import_app.command("mimic-cxr")
def import_mimic_cmd(
    root: ImportRoot,
    out: OutManifest,
    reports: Annotated[
        Path | None,
        typer.Option("--reports", help="MIMIC-CXR reports folder (files/pXX/pSUBJECT/sSTUDY.txt)."),
    ] = None,
    labeler: Annotated[
        str, typer.Option("--labeler", help="Label file: chexpert or negbio.")
    ] = "chexpert",
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """MIMIC-CXR-JPG: files/, mimic-cxr-2.0.0-{metadata,chexpert|negbio,split}.csv(.gz)."""
    _import(
        "mimic-cxr",
        out,
        overwrite,
        root=root,
        reports=reports,
        labeler=labeler,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


@import_app.command("chexpert")
def import_chexpert_cmd(
    root: Annotated[
        Path, typer.Option("--root", help="Folder holding CheXpert-v1.0-small/ (or that folder).")
    ],
    out: OutManifest,
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """CheXpert: train.csv (no official split) and valid.csv (official test set)."""
    _import(
        "chexpert",
        out,
        overwrite,
        root=root,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


@import_app.command("nih")
def import_nih_cmd(
    root: ImportRoot,
    out: OutManifest,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Data_Entry CSV (default: newest Data_Entry_2017*.csv in root)."
        ),
    ] = None,
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """NIH ChestX-ray14: Data_Entry_2017*.csv, test_list.txt, images/ or images_0XX/images/."""
    _import(
        "nih",
        out,
        overwrite,
        root=root,
        csv=csv,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


@import_app.command("folder")
def import_folder_cmd(
    root: Annotated[Path, typer.Option("--root", help="Folder the CSV's paths are relative to.")],
    out: OutManifest,
    labels_csv: Annotated[
        Path | None,
        typer.Option(
            "--labels-csv",
            help="CSV: path, optional patient_id, study_id, view, sex, age, report, split, and "
            "one column per label (default: every image under --root, unlabelled).",
        ),
    ] = None,
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """Any folder of PNG/JPEG/DICOM images with a labels CSV."""
    _import(
        "folder",
        out,
        overwrite,
        root=root,
        labels_csv=labels_csv,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )
