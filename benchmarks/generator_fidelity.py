"""Does a generator recipe draw what its prompts say? One fine-tune, judged by an oracle.

    python benchmarks/generator_fidelity.py --work /tmp/fid --tag NAME
        [--seed 0] [--n 800] [--patients 270] [--fractions 0.4,0.2,0.4]
        [--set FIELD=VALUE ...] [--per-finding 40] [--negatives 40]
        [--scheduler ddim] [--inference-steps 20] [--guidance 4] [--threads 2]
        [--autoencoder GEN/vae] [--eval-only] [--no-film-grain]

Per `--seed` (the phantom drawing, split, oracle, fine-tune and synthesis seeds alike), the
script draws the demo's phantoms (`manifests.phantom.write_phantom_dataset`), splits them by
patient and trains ONE oracle classifier on real train as the demo's first real-only arm
does (resnet10t, 64 px); both are cached under `--work`. Then, for the recipe `--tag`
(the demo preset's generator settings, `study.presets.demo_preset`, overridden by `--set`
with any `augmentor.config.FinetuneConfig` field; `--autoencoder DIR` skips the
autoencoder fit and uses a fitted one), it runs `finetune` -> `synthesize` and prints,
per prompted finding, what the oracle (threshold: Youden on real val) sees:

* hit: share of images prompted for the finding that the oracle calls positive, against
  its rate on real test positives (target: hit >= 0.8 x real);
* false: share of images whose prompt negates (or does not mention) the finding that the
  oracle calls positive, against its rate on real test negatives (real_neg) and the same
  matched to the prompted findings of those images (matched_neg; target: <= matched + 0.10);
* side: the stated side matched (the evaluate-generator side detector), target >= 0.85.

It writes `WORK/<tag>-s<seed>/fidelity.json` and `grid.png` (per finding: six real train
images, then six synthetic ones; last row 'No Finding' prompts). Levers measured with this
script and not adopted (other UNet layouts, noise schedules, sampling terms) are listed in
docs/levers.md with the commit that still runs them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.config import FinetuneConfig, SynthesisConfig
from augmentor.features import (
    HalfMirrorEmbedder,
    embed_images,
    embed_subset,
    image_hashes,
    load_run_extractor,
)
from augmentor.finetune import finetune
from augmentor.generator_metrics import label_thresholds, prompt_fidelity_table
from augmentor.laterality import laterality_table
from augmentor.metrics import positive_rate
from augmentor.report_text import LATERAL_LABELS
from augmentor.synthesize import synthesize
from manifests.files import write_json
from manifests.images import load_image, save_png
from manifests.io import read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from manifests.splits import split_by_patient

FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation")
LABEL_SPEC = "cardiomegaly:{k},pleural_effusion:{k},pneumothorax:{k},consolidation:{k}"


def demo_generator() -> dict:
    """The demo preset's generator settings (study.presets.demo_preset) as FinetuneConfig
    fields, less those this script sets itself (base, seed, checkpointing)."""
    from study.presets import demo_preset

    settings = demo_preset().generator.settings
    return {k: v for k, v in settings.items() if k not in ("base", "seed", "checkpointing_steps")}


def parse_value(text: str):
    """'3' -> 3, '1e-3' -> 0.001, 'true'/'false'/'none', 'a,b' -> ['a', 'b'], else text."""
    if "," in text:
        return [parse_value(x.strip()) for x in text.split(",")]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_value_pair(text: str) -> tuple[str, object]:
    """'--set' text 'FIELD=VALUE' -> (FIELD, parsed VALUE)."""
    key, _, value = text.partition("=")
    return key.strip(), parse_value(value.strip())


def real_data(work: Path, seed: int, n: int, patients: int, fractions: tuple) -> Path:
    """The phantoms of one draw, split by patient; cached under a name that says the draw."""
    split_name = "-".join(f"{x:g}" for x in fractions)
    folder = work / f"data-s{seed}-n{n}-p{patients}-f{split_name}"
    target = folder / "manifest.parquet"
    if not target.is_file():
        source = write_phantom_dataset(
            folder / "phantom", n=n, size=64, seed=seed, patients=patients, overwrite=True
        )
        split = split_by_patient(read_manifest(source), fractions, seed=seed)
        write_manifest(split, target, overwrite=True)
    return target


def draw_name(manifest: Path) -> str:
    """The draw a `real_data` manifest holds, e.g. 's0-n800-p270-f0.4-0.2-0.4'."""
    return manifest.parent.name.removeprefix("data-")


def oracle_run(work: Path, manifest: Path, seed: int) -> Path:
    """The demo's real-only arm (seed `seed`): the oracle, trained once per data draw."""
    from classifier.config import TrainConfig
    from classifier.train import train_classifier

    out = work / f"oracle-{draw_name(manifest)}"
    if not (out / "metrics.json").is_file():
        train_classifier(
            TrainConfig(
                real=manifest,
                out=out,
                backbone="resnet10t",
                labels=FINDINGS,
                image_size=64,
                epochs=8,
                batch_size=32,
                lr=2e-3,
                patience=0,
                seed=seed,
                overwrite=True,
            ),
            log=lambda _t: None,
        )
    return out


# the library table's columns under this script's short names
SHORT_NAMES = {
    "hit_rate": "hit",
    "real_positive_rate": "real_pos",
    "false_finding_rate": "false",
    "real_negative_rate": "real_neg",
    "matched_negative_rate": "matched_neg",
    "n_unprompted": "n_false",
    "side_hit_rate": "side",
    "real_side_hit_rate": "real_side",
    "false_finding_ok": "false_ok",
}


def fidelity(synthetic_path: Path, real_path: Path, oracle: Path, cache: Path) -> pd.DataFrame:
    """`evaluate-generator`'s prompt-fidelity table (hit, false finding, side, targets), short
    column names, plus `nofinding_false`: each finding's rate on 'No Finding' prompts."""
    extractor = load_run_extractor(oracle)
    labels = tuple(extractor.labels)
    syn, real = read_manifest(synthetic_path), read_manifest(real_path)
    syn_h, real_h = image_hashes(syn), image_hashes(real)
    syn_p = embed_images(syn.image_paths(), syn_h, [extractor], cache)[0]["probs"]
    real_p = embed_images(real.image_paths(), real_h, [extractor], cache)[0]["probs"]
    targets = syn.rows["target_label"]
    lateral = [lab for lab in LATERAL_LABELS if lab in labels]
    halves = HalfMirrorEmbedder(extractor)
    side_syn = embed_subset(syn, syn_h, targets.isin(lateral).to_numpy(), halves, cache)
    side_real = embed_subset(
        real, real_h, (real.rows[lateral].to_numpy() == 1).any(axis=1), halves, cache
    )
    sides, _ = laterality_table(syn, real, side_syn, side_real, labels)
    table = prompt_fidelity_table(syn_p, syn.rows, real_p, real.rows, labels, sides)
    no_finding = (targets == "No Finding").to_numpy()
    table["nofinding_false"] = [
        positive_rate(syn_p[no_finding, labels.index(f)], t)
        for f, t in zip(table["finding"], table["threshold"], strict=True)
    ]
    table = table.rename(columns=SHORT_NAMES)
    table["side_ok"] = table["side_ok"].map(lambda ok: ok is not False)
    return table


@torch.no_grad()
def autoencoder_ceiling(vae_dir: Path, real_path: Path, oracle: Path) -> pd.DataFrame:
    """The oracle on autoencoder reconstructions of real test images: what any UNet can reach.

    A finding the autoencoder cannot reconstruct (a fine pleural line, lung markings) is a
    finding no prompt can make the decoder draw; blur the oracle reads as opacity shows up
    as false consolidation here first. `grain_*` columns: the same reconstructions with
    the film grain that `synthesize` adds (fitted on up to 256 train images as fine-tuning
    does, `augmentor.grain`), i.e. the ceiling of what a `tiny` generator's images can show.
    """
    from diffusers import AutoencoderKL

    from augmentor.grain import add_grain, fit_autoencoder_grain, gray01, reconstruct
    from augmentor.latents import load_pixels
    from augmentor.train_inputs import GRAIN_FIT_IMAGES

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    extractor = load_run_extractor(oracle)
    labels = list(extractor.labels)
    real = read_manifest(real_path)
    split = real.rows["split"].to_numpy()
    idx = np.flatnonzero(split != "train")
    paths = real.image_paths()
    pixels = load_pixels([paths[i] for i in idx], 64, 1)
    rec = reconstruct(vae, pixels)
    train = [paths[i] for i in np.flatnonzero(split == "train")[:GRAIN_FIT_IMAGES]]
    grain = fit_autoencoder_grain(vae, load_pixels(train, 64, 1))
    grainy = add_grain(gray01(rec), grain, list(range(len(rec))))

    def to_u8(x: np.ndarray) -> list[np.ndarray]:
        return list((np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8))

    p_orig = extractor(to_u8(gray01(pixels)))["probs"]
    p_rec = extractor(to_u8(gray01(rec)))["probs"]
    p_grain = extractor(to_u8(grainy))["probs"]
    rows, held = real.rows.iloc[idx], split[idx]
    thresholds = label_thresholds(p_orig[held == "val"], rows[held == "val"], labels)
    records = []
    for j, label in enumerate(labels):
        v, t = rows[label].to_numpy(dtype=np.float64), thresholds[label][0]
        pos, neg = (held == "test") & (v == 1), (held == "test") & (v == 0)
        records.append(
            {
                "finding": label,
                "real_pos": positive_rate(p_orig[pos, j], t),
                "recon_pos": positive_rate(p_rec[pos, j], t),
                "grain_pos": positive_rate(p_grain[pos, j], t),
                "real_neg": positive_rate(p_orig[neg, j], t),
                "recon_neg": positive_rate(p_rec[neg, j], t),
                "grain_neg": positive_rate(p_grain[neg, j], t),
            }
        )
    return pd.DataFrame(records).assign(recon_mae=float((rec - pixels).abs().mean()))


def grid(synthetic_path: Path, real_path: Path, path: Path, per_row: int = 6) -> None:
    """Per finding (and No Finding): `per_row` real train positives, a gap, `per_row` synthetic."""
    syn, real = read_manifest(synthetic_path), read_manifest(real_path)
    sp, rp = syn.image_paths(), real.image_paths()
    train = (real.rows["split"] == "train").to_numpy()
    rows, prompts = [], []
    for label in (*FINDINGS, "No Finding"):
        r = np.flatnonzero(train & (real.rows[label].to_numpy() == 1))[:per_row]
        s = np.flatnonzero((syn.rows["target_label"] == label).to_numpy())[:per_row]
        if not len(s):
            continue
        real_tiles = [load_image(rp[i]) for i in r]
        syn_tiles = [load_image(sp[i]) for i in s]
        blank = np.zeros_like(syn_tiles[0])
        real_tiles += [blank] * (per_row - len(real_tiles))
        syn_tiles += [blank] * (per_row - len(syn_tiles))
        gap = np.full((blank.shape[0], 8), 255, np.uint8)
        rows.append(np.concatenate([*real_tiles, gap, *syn_tiles], axis=1))
        prompts.append(f"{label}: " + " | ".join(syn.rows["prompt"].iloc[i] for i in s))
    save_png(np.concatenate(rows, axis=0), path)
    path.with_suffix(".txt").write_text("\n".join(prompts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--patients", type=int, default=270)
    parser.add_argument("--fractions", default="0.4,0.2,0.4")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--per-finding", type=int, default=40)
    parser.add_argument("--negatives", type=int, default=40)
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-only", action="store_true", help="resynthesize, keep generator")
    parser.add_argument("--no-film-grain", action="store_true", help="synthesize without grain")
    parser.add_argument(
        "--autoencoder",
        type=Path,
        help="use this fitted tiny autoencoder (e.g. runs/demo/generator/vae) instead of "
        "fitting one: the recipe's UNet and text encoder alone are compared",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fractions = tuple(float(x) for x in args.fractions.split(","))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    manifest = real_data(work, args.seed, args.n, args.patients, fractions)
    oracle = oracle_run(work, manifest, args.seed)
    t_oracle = time.perf_counter() - t0

    settings = demo_generator()
    settings.update(parse_value_pair(s) for s in args.set)
    out = work / f"{args.tag}-s{args.seed}"
    generator = out / "generator"
    t = time.perf_counter()
    if not args.eval_only:
        if args.autoencoder:
            _patch_autoencoder(args.autoencoder)
        finetune(
            FinetuneConfig(
                manifest=str(manifest),
                base="tiny",
                out=str(generator),
                seed=args.seed,
                checkpointing_steps=100_000,
                overwrite=True,
                show_progress=False,
                **settings,
            ),
            log=lambda _t: None,
        )
    t_finetune = time.perf_counter() - t
    t = time.perf_counter()
    grain = "" if not args.no_film_grain else "-nograin"
    synth = out / f"synthetic-g{args.guidance:g}-{args.scheduler}{args.inference_steps}{grain}"
    synthesize(
        SynthesisConfig(
            model=str(generator),
            prompts_from=str(manifest),
            out=str(synth),
            labels=LABEL_SPEC.format(k=args.per_finding),
            negatives=args.negatives,
            seed=args.seed,
            scheduler=args.scheduler,
            num_inference_steps=args.inference_steps,
            guidance_scale=args.guidance,
            batch_size=40,
            film_grain=not args.no_film_grain,
            overwrite=True,
        )
    )
    t_synth = time.perf_counter() - t
    table = fidelity(synth / "manifest.parquet", manifest, oracle, work / "feature_cache")
    grid(synth / "manifest.parquet", manifest, synth / "grid.png")
    ceiling = autoencoder_ceiling(generator / "vae", manifest, oracle)
    record = json.loads((generator / "cxraug.json").read_text())
    summary = {
        "autoencoder_ceiling": ceiling.to_dict(orient="records"),
        "tag": args.tag,
        "seed": args.seed,
        "settings": settings,
        "sampling": [args.scheduler, args.inference_steps, args.guidance],
        "film_grain": not args.no_film_grain,
        "finetune_wall_s": t_finetune,
        "images_per_second": record["images_per_second"],
        "train_seconds": record["train_seconds"],
        "timings": record["timings"],
        "n_train_images": record["n_train_images"],
        "synthesis_wall_s": t_synth,
        "oracle_wall_s": t_oracle,
        "table": table.to_dict(orient="records"),
        "passes": bool(table[["hit_ok", "false_ok", "side_ok"]].all().all()),
    }
    write_json(synth / "fidelity.json", summary, overwrite=True)
    pd.set_option("display.width", 200)
    print(
        f"{args.tag} seed {args.seed} {settings} sampling {summary['sampling']}: "
        f"finetune {t_finetune:.0f}s ({record['images_per_second']:.1f} img/s), "
        f"synthesis {t_synth:.0f}s; grid {synth / 'grid.png'}"
    )
    cols = ["finding", "hit", "real_pos", "false", "real_neg", "matched_neg", "side",
            "n_sided", "real_side", "hit_ok", "false_ok", "side_ok"]  # fmt: skip
    print(table[cols].round(2).to_string(index=False))
    print("oracle on autoencoder reconstructions of real val/test images (the ceiling):")
    print(ceiling.round(3).to_string(index=False))
    print("PASS" if summary["passes"] else "FAIL")


def _patch_autoencoder(folder: Path) -> None:
    """Make fine-tuning from `tiny` take the fitted autoencoder in `folder` (no fit)."""
    from diffusers import AutoencoderKL

    from augmentor import generator

    def load(_out):
        vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
        return vae, {"loaded_from": str(folder), "steps": 0, "seconds": 0.0}

    generator.load_autoencoder = load


if __name__ == "__main__":
    main()
