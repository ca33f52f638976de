"""Text encoder probe: did fine-tuning make the text encoder represent findings better?

RoentGen (Chambon et al. 2022) reported that fine-tuning Stable Diffusion's CLIP text
encoder on reports improved how it represents some findings (pneumothorax +25% in their
probe). `probe_text_encoder` measures the same kind of thing on your data: it embeds
report texts with the base and the fine-tuned text encoder (mean over tokens, or the
end-of-text token), fits one logistic-regression probe per label on train-split reports
and reports its AUROC on held-out (val + test) reports, for both encoders, and the change
with a 95% CI: a paired bootstrap over held-out patients (all their reports; a patient's
reports are correlated), the same resampled reports scoring both encoders' probes. The
probes are fit once; the CI covers which reports were held out, not refitting.
It reports what it measures; nothing of the paper's numbers is assumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.eval_config import POOLINGS, ProbeConfig
from augmentor.eval_folder import probe_path, write_probe
from augmentor.metrics import binary_targets, linear_probe_auroc
from classifier.stats import (
    CI_LEVEL,
    SeedTerm,
    patient_resample_weights,
    resampled_auroc,
    seed_interval,
)
from manifests.errors import UserError
from manifests.files import check_output_folder, check_safetensors
from manifests.io import read_manifest
from manifests.schema import resolve_label
from manifests.splits import check_leakage


def _check_encoder_spec(spec: str | Path, flag: str) -> None:
    if str(spec) == "tiny":
        return
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"{flag} {spec}: not 'tiny' nor a local diffusers folder")
    for sub in ("tokenizer", "text_encoder"):
        if not (path / sub).is_dir():
            raise UserError(f"{flag} {path}: missing {sub}/ (not a diffusers pipeline folder)")
    weights = sorted((path / "text_encoder").glob("*.safetensors"))
    if not weights:
        raise UserError(f"{flag} {path}: no text_encoder/*.safetensors (safetensors only)")
    for file in weights:
        check_safetensors(file, flag)


def load_text_encoder(spec: str | Path, flag: str = "--base"):
    """(tokenizer, text encoder) of `tiny` or a diffusers folder; local files only."""
    from transformers import CLIPTextModel, CLIPTokenizer

    if str(spec) == "tiny":
        from augmentor.base import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        return pipe.tokenizer, pipe.text_encoder.eval()
    _check_encoder_spec(spec, flag)
    path = Path(spec)
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(
        path / "text_encoder", local_files_only=True, use_safetensors=True
    )
    return tokenizer, encoder.eval()


@torch.inference_mode()
def embed_texts(
    tokenizer, encoder, texts: list[str], pooling: str = "mean", batch_size: int = 64
) -> np.ndarray:
    """One vector per text: masked mean of last hidden states, or the EOS pooled output.

    Texts are truncated to the tokenizer's length (77 for CLIP), as in generation.
    """
    if pooling not in POOLINGS:
        raise UserError(f"--pooling: {pooling!r} is not valid; valid: {', '.join(POOLINGS)}")
    device = next(encoder.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        )
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        result = encoder(input_ids=ids, attention_mask=mask)
        if pooling == "eos":
            vectors = result.pooler_output
        else:
            m = mask.unsqueeze(-1).to(result.last_hidden_state.dtype)
            vectors = (result.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1)
        out.append(vectors.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _relative(base: float, delta: float) -> float:
    return 100.0 * delta / base if math.isfinite(delta) and base > 0 else float("nan")


def _probe_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int, c: float
) -> np.ndarray:
    """Held-out scores of the probe `augmentor.metrics.linear_probe_auroc` fits (the same
    standardise + logistic regression, same seed), for the bootstrap."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
    )
    probe.fit(train_x, train_y)
    return probe.predict_proba(test_x)[:, 1]


def _paired_delta_ci(
    y: np.ndarray, scores: dict[str, np.ndarray], patients: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, int]:
    """CI of AUROC(fine-tuned) - AUROC(base) over held-out patients, paired; NaN if undefined.

    The report's interval for one run per arm (`classifier.stats.seed_interval`: the
    patient-bootstrap percentile interval of the paired difference).
    """
    if set(scores) != {"base", "finetuned"} or n_boot < 1:
        return math.nan, math.nan, 0
    weights, codes = patient_resample_weights(patients, n_boot, seed)
    res = {name: resampled_auroc(y, s, weights, codes) for name, s in scores.items()}
    diff = res["finetuned"] - res["base"]  # (n_boot, 1)
    interval = seed_interval([SeedTerm(np.zeros((1, 1)), diff[None])], delta=True)
    return float(interval.lo[0]), float(interval.hi[0]), int(interval.n_valid[0])


@dataclass
class ProbeResult:
    """The per-label table (see `probe_text_encoder`) and notes on how to read it."""

    table: pd.DataFrame
    notes: list[str]


def probe_text_encoder(cfg: ProbeConfig) -> ProbeResult:
    """Per label: held-out AUROC of a linear probe on base vs fine-tuned report embeddings.

    Targets: 1 positive; 0 negative or not mentioned (NaN); uncertain (-1) reports are
    left out of that label's probe. Each distinct report text is embedded once.

    Returns:
        a table with columns label, n_train, n_train_pos, n_heldout, n_heldout_pos,
        base_auroc, finetuned_auroc, delta (absolute), relative_pct (delta / base AUROC *
        100), note, delta_lo, delta_hi (the change's paired bootstrap CI over held-out
        patients), n_valid (resamples of `n_boot` with both classes); and notes (e.g. that
        the encoders are identical).
    """
    if cfg.pooling not in POOLINGS:
        raise UserError(f"--pooling: {cfg.pooling!r} is not valid; valid: {', '.join(POOLINGS)}")
    json_path = probe_path(cfg.out) if cfg.out else None
    if json_path is not None:
        check_output_folder(Path(cfg.out), "--out")
    if json_path is not None and json_path.exists() and not cfg.overwrite:
        raise UserError(f"{json_path}: already exists; pass --overwrite to replace it")
    manifest = read_manifest(cfg.manifest)
    rows = manifest.rows
    rows = rows[(rows["source"] == "real") & rows["report"].fillna("").str.strip().ne("")]
    if not len(rows):
        raise UserError(f"--manifest {cfg.manifest}: no real rows with report text")
    check_leakage(manifest.with_rows(rows), where=f"--manifest {cfg.manifest}")
    train = (rows["split"] == "train").to_numpy()
    held = ~train
    if not train.any() or not held.any():
        raise UserError(
            f"--manifest {cfg.manifest}: needs train and val/test reports "
            f"({int(train.sum())} train, {int(held.sum())} held out); split it first"
        )
    if cfg.labels:
        labels = list(dict.fromkeys(resolve_label(n, manifest.labels) for n in cfg.labels))
    else:
        labels = []
        for label in manifest.labels:
            y = binary_targets(rows[label].to_numpy())
            counts = [((y[s] == 1).sum(), (y[s] == 0).sum()) for s in (train, held)]
            if all(p >= 2 and n >= 2 for p, n in counts):
                labels.append(label)
        if not labels:
            raise UserError(
                f"--manifest {cfg.manifest}: no label has 2+ positive and negative reports in "
                "both train and held-out splits; pass --labels"
            )
    for spec, flag in ((cfg.base, "--base"), (cfg.finetuned, "--finetuned")):
        _check_encoder_spec(spec, flag)
    texts = rows["report"].astype(str).tolist()
    unique = list(dict.fromkeys(texts))
    position = {t: i for i, t in enumerate(unique)}
    which = np.array([position[t] for t in texts])
    embeddings = {}
    for name, spec, flag in (
        ("base", cfg.base, "--base"),
        ("finetuned", cfg.finetuned, "--finetuned"),
    ):
        tokenizer, encoder = load_text_encoder(spec, flag)
        embeddings[name] = embed_texts(tokenizer, encoder, unique, cfg.pooling, cfg.batch_size)[
            which
        ]
        del encoder
    notes = [
        f"{len(unique)} distinct report texts; probes fit on {int(train.sum())} train reports, "
        f"scored on {int(held.sum())} val/test reports"
    ]
    if np.allclose(embeddings["base"], embeddings["finetuned"]):
        notes.append(
            "base and fine-tuned text encoders give identical embeddings: the generator was "
            "fine-tuned without --train-text-encoder, so no change is expected"
        )
    patients = rows["patient_id"].astype(str).to_numpy()
    records = []
    for label in labels:
        y = binary_targets(rows[label].to_numpy())
        keep = y >= 0
        tr, te = train & keep, held & keep
        aucs, scores, reasons = {}, {}, []
        for name, x in embeddings.items():
            aucs[name], note = linear_probe_auroc(x[tr], y[tr], x[te], y[te], cfg.seed, cfg.c)
            if note:
                reasons.append(note)
            else:
                scores[name] = _probe_scores(x[tr], y[tr], x[te], cfg.seed, cfg.c)
        delta = aucs["finetuned"] - aucs["base"]
        lo, hi, n_valid = _paired_delta_ci(y[te], scores, patients[te], cfg.n_boot, cfg.seed)
        records.append(
            {
                "label": label,
                "n_train": int(tr.sum()),
                "n_train_pos": int((y[tr] == 1).sum()),
                "n_heldout": int(te.sum()),
                "n_heldout_pos": int((y[te] == 1).sum()),
                "base_auroc": aucs["base"],
                "finetuned_auroc": aucs["finetuned"],
                "delta": delta,
                "relative_pct": _relative(aucs["base"], delta),
                "note": "; ".join(dict.fromkeys(reasons)),
                "delta_lo": lo,
                "delta_hi": hi,
                "n_valid": n_valid,
            }
        )
    notes.append(
        f"change CI: {int(round(CI_LEVEL * 100))}% paired bootstrap over held-out patients "
        f"({cfg.n_boot} resamples, seed {cfg.seed}; the same resampled reports score both "
        "probes; n_valid of them had both classes); the probes are fit once, so it does not "
        "cover refitting them"
    )
    table = pd.DataFrame(records)
    if json_path is not None:
        doc = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "n_unique_reports": len(unique),
            "notes": notes,
            "rows": [
                {
                    k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                    for k, v in r.items()
                }
                for r in records
            ],
        }
        write_probe(Path(cfg.out), doc, table)
    return ProbeResult(table=table, notes=notes)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The probe table for a terminal: counts as 'n (positives)', short headers."""
    shown = pd.DataFrame(
        {
            "label": table["label"],
            "train (pos)": [
                f"{n} ({p})" for n, p in zip(table["n_train"], table["n_train_pos"], strict=True)
            ],
            "held-out (pos)": [
                f"{n} ({p})"
                for n, p in zip(table["n_heldout"], table["n_heldout_pos"], strict=True)
            ],
            "base": table["base_auroc"],
            "fine-tuned": table["finetuned_auroc"],
            "change": table["delta"],
            f"change [{int(round(CI_LEVEL * 100))}% CI]": [
                "n/a" if not math.isfinite(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
                for lo, hi in zip(table["delta_lo"], table["delta_hi"], strict=True)
            ],
            "change %": table["relative_pct"],
            "note": table["note"],
        }
    )
    return shown if shown["note"].astype(bool).any() else shown.drop(columns=["note"])
