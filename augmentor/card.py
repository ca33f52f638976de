"""What made a synthetic set, gathered for its dataset card (`cxraug manifest export`).

`manifests.export` writes the card but cannot read the generator's or the synthesis run's
records (those belong to `augmentor`); this module reads them through their owners
(`augmentor.generator`, `augmentor.synthetic_set`, `augmentor.eval_folder`) and returns
one plain dict for `manifests.export.dataset_card(provenance=...)`. Everything is optional:
a real manifest, or a synthetic one moved away from its folder, gets what can be found and
the card says what is missing. The memorization audit comes from the evaluation the caller
names (`cxraug manifest export` names a study's own, `study.folder.generator_eval_for`),
else from one beside the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from augmentor.eval_folder import find_beside, load_summary, memorization_audit, summary_path
from augmentor.generator import RECORD_FILE as RUN_FILE
from augmentor.prompt_policy import POLICIES, describe
from augmentor.synthetic_set import RECORD_FILE as SYNTHESIS_FILE
from manifests import provenance
from manifests.errors import UserError
from manifests.io import Manifest, read_manifest

PROMPT_POLICY = (
    "Label-balanced, as in RoentGen: each synthetic image is prompted by a real train-split "
    "report of a positive case for its target label (reports cycled in a seeded order, every "
    "report used before any repeats) and carries that report's labels; a label without a "
    "positive report falls back to a template prompt (`prompt_source` = template). "
    "Negatives come from 'No Finding' reports."
)
UNRECORDED_HYGIENE = (
    "not recorded (a set made before prompt policies: its prompts are the reports as written)"
)
_GENERATOR_KEYS = (
    "base",
    "manifest_digest",
    "global_step",
    "resolution",
    "learning_rate",
    "lora_rank",
    "train_text_encoder",
    "ema",
    "n_train_images",
    "versions",
)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _datasets_of(manifest_path: str | None) -> list[str]:
    """The `dataset` values of a manifest's real rows ([] when it cannot be read)."""
    if not manifest_path:
        return []
    try:
        rows = read_manifest(Path(manifest_path), columns=["dataset"], validate=False).rows
    except UserError:
        return []
    return sorted(rows.loc[rows["source"] == "real", "dataset"].dropna().unique().tolist())


def prompt_hygiene(manifest: Manifest) -> str:
    """The card's line on prompt hygiene: the set's prompt policy and what it removed per
    rule over the drawn report prompts (`cxraug.provenance`), or that it is not recorded."""
    hygiene = (provenance.read_record(manifest) or {}).get("prompt_policy")
    if not isinstance(hygiene, dict) or hygiene.get("policy") not in POLICIES:
        return f"Prompt hygiene: {UNRECORDED_HYGIENE}."
    line = describe(hygiene["policy"], hygiene.get("removed"), hygiene.get("report_prompts"))
    return f"Prompt hygiene: {line}"


def synthesis_provenance(manifest_path: Path, generator_eval: Path | None = None) -> dict:
    """Provenance of the synthetic rows of `manifest_path` for its dataset card.

    Args:
        manifest_path: a manifest (synthetic or mixed; a real one yields {}).
        generator_eval: an evaluate-generator folder or its `generator_eval.json`; default:
            one beside the manifest that audited it (`augmentor.eval_folder.find_beside`).

    Returns:
        keys `synthesis` (sampler settings, seeds, digests), `generator` (base, training-data
        digest, steps, ...), `prompt_policy` (how prompts are drawn, then `prompt_hygiene`),
        `training_datasets` (datasets that trained the generator or gave the prompts),
        `memorization` (the audit's summary), when known.
    """
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path, columns=["source"], validate=False)
    if not (manifest.rows["source"] == "synthetic").any():
        return {}
    out: dict = {"prompt_policy": f"{PROMPT_POLICY}\n\n{prompt_hygiene(manifest)}"}
    identity = manifest.metadata.get("cxraug.synthesis")
    record = _read_json(manifest_path.parent / SYNTHESIS_FILE) or {}
    synthesis = dict(json.loads(identity)) if identity else {}
    config = record.get("config") or {}
    for key in ("model", "prompts_from", "labels", "negatives", "batch_size"):
        if key in config:
            synthesis.setdefault(key, config[key])
    if synthesis:
        out["synthesis"] = synthesis
    training: set[str] = set(_datasets_of(config.get("prompts_from")))
    model = config.get("model")
    run = _read_json(Path(model) / RUN_FILE) if model else None
    if run:
        out["generator"] = {k: run[k] for k in _GENERATOR_KEYS if k in run}
        out["generator"]["folder"] = str(model)
        training |= set(_datasets_of((run.get("config") or {}).get("manifest")))
    if training:
        out["training_datasets"] = sorted(training)
    if generator_eval is not None:
        path = summary_path(generator_eval)
        if not path.is_file():
            raise UserError(f"--generator-eval: {path} not found")
    else:
        path = find_beside(manifest_path)
    doc = load_summary(path) if path is not None else None
    memo = memorization_audit(doc) if doc else None
    if memo:
        memo["report"] = str(path)
        out["memorization"] = memo
    return out


__all__ = ["PROMPT_POLICY", "UNRECORDED_HYGIENE", "prompt_hygiene", "synthesis_provenance"]
