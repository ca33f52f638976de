"""The embedded phantom dataset: frontal chest-radiograph phantoms with reports and labels.

A demo and test fixture, never clinical data. Every image is drawn from a :class:`Study`
(a patient's stable anatomy plus this study's findings) with vectorised numpy on a
normalised coordinate grid: body outline, lungs with vascular markings, heart and
mediastinum, diaphragm domes, ribs, clavicles and spine, then the study's findings.

Conventions:
    * Images are PA/AP frontal views as displayed clinically: the patient's RIGHT is on the
      image's LEFT (``x < 0``), the patient's LEFT on the image's right. Every side word
      ("left", "right", "bilateral") in reports and in ``phantom_findings`` is the
      patient's side.
    * Modelled labels (No Finding, Cardiomegaly, Lung Opacity, Consolidation, Pneumothorax,
      Pleural Effusion, Support Devices) are never NaN: 1 drawn, -1 drawn subtly and
      hedged in the report, 0 absent. The report always states the four main findings
      (heart size, effusion, pneumothorax, consolidation) positively or as an explicit
      negative, so a 0 is backed by the text. The other seven CheXpert labels are NaN
      (not mentioned): the phantom never draws them.
    * No Finding follows CheXpert: 1 when no pathology is positive or uncertain (support
      devices do not count), else 0.
    * Consolidation implies Lung Opacity; a hedged consolidation ("patchy opacity,
      possibly early consolidation") is Consolidation -1 and Lung Opacity 1.
    * Side words appear in reports only for findings with laterality (effusion,
      pneumothorax, consolidation), so a prompt's "left"/"right" always names a finding's
      side; device sentences carry none.
    * Cardiomegaly is a patient trait (heart size is anatomy, stable across studies); the
      other findings are drawn per study.

Manifest (`write_phantom_dataset`): manifest v1 rows (source 'real', dataset 'phantom',
split 'train', view PA or AP) with `report` = the impression and extra columns
`report_findings` (FINDINGS-style text), `phantom_findings` (JSON: finding -> side,
severity, lobe, devices, uncertain; the ground truth for generator evaluation),
`phantom_ctr` (cardiothoracic ratio drawn) and `image_sha256`. Parquet metadata
`cxraug.notes` says it is a synthetic demo; `cxraug.phantom` records n, size, seed,
patients and the first patient's number.
"""

from manifests.phantom.dataset import DATASET, NOTE, encode_png, write_phantom_dataset
from manifests.phantom.drawing import IMAGE_HALF, THORACIC_WIDTH, draw_phantom
from manifests.phantom.findings import (
    DEVICES,
    HEDGE_RATE,
    LOBES,
    MODELLED_LABELS,
    PATHOLOGIES,
    PREVALENCE,
    Patient,
    Study,
    phantom_studies,
    sample_patient,
    sample_study,
    study_ctr,
    study_labels,
)
from manifests.phantom.reports import study_report

__all__ = [
    "DATASET",
    "DEVICES",
    "HEDGE_RATE",
    "IMAGE_HALF",
    "LOBES",
    "MODELLED_LABELS",
    "NOTE",
    "PATHOLOGIES",
    "PREVALENCE",
    "THORACIC_WIDTH",
    "Patient",
    "Study",
    "draw_phantom",
    "encode_png",
    "phantom_studies",
    "sample_patient",
    "sample_study",
    "study_ctr",
    "study_labels",
    "study_report",
    "write_phantom_dataset",
]
