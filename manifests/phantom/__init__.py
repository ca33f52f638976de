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

Demographics (design 2, `PHANTOM_DESIGN`): each patient has a sex and an age that change
the drawing as they change a radiograph, and the findings' prevalences.

    * Who: women are the under-represented subgroup, `FEMALE_SHARE` = 0.3 of patients.
      Ages are ``20 + 68 * Beta(2.2, 1.6)`` years (`AGE_RANGE` = (20, 88), `AGE_BETA`):
      mean about 59, median about 60; about 13% under 40, 47% 40-64, 40% 65 or older. A
      study's age is the patient's plus 0.7 years per earlier study.
    * Anatomy, all of it fixed per patient (a patient looks the same in every study; only
      acquisition and findings change): women have narrower bodies and bilateral breast
      shadows over the lower zones (smooth, rounded, of moderate density, over the lower
      half of each lung field, densest centrally, with a soft inferior-lateral edge and an
      upper edge that fades out; size 0.75-1.25 per patient, slightly asymmetric, sitting
      lower with age). With age the heart grows: ctr = base + `CTR_PER_YEAR` (0.0006) per
      year over 20 (+0.041 at 88), and the Cardiomegaly label is decided on that ctr
      (over 0.5), so labels and drawings agree: a healthy heart is 0.37-0.45 at base and
      stays under 0.5 at any age; an enlarged one is borderline (0.50-0.52, hedged) or
      0.54-0.63 at base. Per-study jitter never crosses 0.5. The aorta unfolds (a larger,
      more lateral knob and a bulging ascending aorta) from 40, fully at 80; bones (ribs
      and clavicles; the spine half as much) lose density from 35, faster in women from
      50 (to about 0.7 of the young density in men and 0.5 in women at 88); costal
      cartilage calcifies from 35 (faint flecks at the anterior rib ends: along the
      cartilage margins in men, central in women, as on real films), and an unfolded,
      calcifying aorta shows a faint rim along the top of its knob.
    * Prevalences: each finding's probability is ``PREVALENCE * risk / mean risk`` where
      the relative risk is ``per_decade ** ((age - 60) / 10)``, times ``women`` for women
      (`SUBGROUP_RISK`), and the mean is over the default demographics, so the overall
      prevalence stays at `PREVALENCE` in the default draw: Cardiomegaly 1.45 per decade,
      women 0.8; Pleural Effusion 1.3, 1.0; Pneumothorax 0.8 (commoner in the young), women
      0.4 (commoner in young men); Consolidation 1.15, 0.9; Support Devices 1.15, 0.9.
      Probabilities are capped at 0.9.
    * Reports state the demographics as real ones do: `HEADER_SHARE` = 0.5 of studies
      (decided per study, deterministically in the seed) start their impression with
      ``manifests.demographics.demographic_phrase`` (``"72-year-old woman."``), except
      the rare impression too long to take it within CLIP's 77 tokens (over
      `reports.HEADER_MAX_WORDS` = 40 words: about 1 in 4000); the findings text never
      carries it.

Manifest (`write_phantom_dataset`): manifest v1 rows (source 'real', dataset 'phantom',
split 'train', view PA or AP) with `report` = the impression and extra columns
`report_findings` (FINDINGS-style text), `phantom_findings` (JSON: finding -> side,
severity, lobe, devices, uncertain; the ground truth for generator evaluation),
`phantom_ctr` (cardiothoracic ratio drawn) and `image_sha256`. Parquet metadata
`cxraug.notes` says it is a synthetic demo; `cxraug.phantom` records n, size, seed,
patients, the first patient's number and the design version (`PHANTOM_DESIGN`).
"""

from manifests.phantom.dataset import DATASET, NOTE, encode_png, write_phantom_dataset
from manifests.phantom.drawing import IMAGE_HALF, THORACIC_WIDTH, draw_phantom
from manifests.phantom.findings import (
    AGE_BETA,
    AGE_RANGE,
    CTR_PER_YEAR,
    DEVICES,
    FEMALE_SHARE,
    HEADER_SHARE,
    HEDGE_RATE,
    LOBES,
    MODELLED_LABELS,
    PATHOLOGIES,
    PHANTOM_DESIGN,
    PREVALENCE,
    SUBGROUP_RISK,
    Patient,
    Study,
    finding_probability,
    phantom_studies,
    sample_patient,
    sample_study,
    study_ctr,
    study_labels,
)
from manifests.phantom.reports import study_report

__all__ = [
    "AGE_BETA",
    "AGE_RANGE",
    "CTR_PER_YEAR",
    "DATASET",
    "DEVICES",
    "FEMALE_SHARE",
    "HEADER_SHARE",
    "HEDGE_RATE",
    "IMAGE_HALF",
    "LOBES",
    "MODELLED_LABELS",
    "NOTE",
    "PATHOLOGIES",
    "PHANTOM_DESIGN",
    "PREVALENCE",
    "SUBGROUP_RISK",
    "THORACIC_WIDTH",
    "Patient",
    "Study",
    "draw_phantom",
    "encode_png",
    "finding_probability",
    "phantom_studies",
    "sample_patient",
    "sample_study",
    "study_ctr",
    "study_labels",
    "study_report",
    "write_phantom_dataset",
]
