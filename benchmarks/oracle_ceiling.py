"""What can a generator reach at best? The oracle on perfect drawings without film grain.

    python benchmarks/oracle_ceiling.py --work /tmp/fid [--seed 0] [--n 800]
        [--grain 1,0.5,0] [--vae GEN/vae ...] [--fit-steps 400,800] [--threads 2]

`evaluate-generator` judges synthetic images with an oracle: a classifier trained on real
train images. This script asks how much of that judgement rests on the finding itself and
how much on image texture a generator may not reproduce. For the demo's phantom data
(drawn and split as in `benchmarks/generator_fidelity.py`, the same cached oracle), it
redraws every real val/test study with the exact same anatomy and findings, with its film
grain scaled by each `--grain` factor (1 = the images on disk, 0 = no grain), and, per
`--vae`, passes the real images through that autoencoder (decode of the posterior mean),
then adds the film grain that autoencoder drops, as measured on the train images
(`augmentor.grain`, what `synthesize` adds to a `tiny` generator's images); it prints that
measured grain beside the grain the phantom actually drew (image minus its grain-free
redrawing, per intensity band). `--fit-steps` fits `tiny`'s autoencoder on the train images
for each step count, as `finetune` does (its default batch size and learning rate), caches it
under `--work` and adds it to the `--vae` list: how far a longer fit moves the ceiling.
Per rendering and finding it prints the oracle's rate on test positives (the hit a
perfect generator would get) and on test negatives (its false-finding rate), and whether
the fidelity targets hold against the real images' rates: hit >= 0.8 x real, false finding
<= real + 0.10. A rendering that fails them is a ceiling no generator drawing that way can
pass, however well it follows its prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL
from generator_fidelity import draw_name, oracle_run, real_data

from augmentor.autoencoder import fit_autoencoder
from augmentor.base import build_tiny_pipeline
from augmentor.config import FinetuneConfig
from augmentor.features import load_run_extractor
from augmentor.generator_metrics import label_thresholds
from augmentor.grain import BANDS, add_grain, fit_grain, gray01, reconstruct
from augmentor.latents import load_pixels
from augmentor.metrics import positive_rate
from augmentor.train_inputs import GRAIN_FIT_IMAGES
from manifests.io import read_manifest
from manifests.phantom.drawing import draw_phantom
from manifests.phantom.findings import phantom_studies


def _u8(pixels: torch.Tensor) -> list[np.ndarray]:
    return list(((pixels[:, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy())


def redraw(rows: pd.DataFrame, n: int, seed: int, patients: int, grain: float, size: int):
    """The studies of `rows`, drawn again with their film grain scaled by `grain`."""
    by_id = {s.study_id: s for s in phantom_studies(n, seed=seed, patients=patients)}
    return [
        draw_phantom(dataclasses.replace(by_id[sid], noise=by_id[sid].noise * grain), size)
        for sid in rows["study_id"]
    ]


def drawn_grain(rows: pd.DataFrame, n: int, seed: int, patients: int) -> list[float]:
    """The grain the phantom actually drew, per intensity band: image at grain x1 minus x0."""
    grainy = np.stack(redraw(rows, n, seed, patients, 1.0, 64)).astype(np.float32) / 255
    clean = np.stack(redraw(rows, n, seed, patients, 0.0, 64)).astype(np.float32) / 255
    band = np.clip((clean * BANDS).astype(np.intp), 0, BANDS - 1)
    diff = grainy - clean
    return [
        round(float(diff[band == k].std()), 4) if (band == k).sum() >= 64 else float("nan")
        for k in range(BANDS)
    ]


def rates(probs, rows, held, labels, thresholds) -> dict[str, tuple[float, float]]:
    """Per label: the oracle's positive rate on test positives and on test negatives."""
    out = {}
    for j, label in enumerate(labels):
        v, t = rows[label].to_numpy(dtype=np.float64), thresholds[label][0]
        pos, neg = (held == "test") & (v == 1), (held == "test") & (v == 0)
        out[label] = (positive_rate(probs[pos, j], t), positive_rate(probs[neg, j], t))
    return out


def fitted_autoencoder(work: Path, draw: str, seed: int, paths, train, steps: int) -> Path:
    """`tiny`'s autoencoder fitted `steps` steps on the train images, as `finetune` fits it.

    The batch size and learning rate are `FinetuneConfig`'s defaults; cached under `work`
    by `draw` (the data draw's name, e.g. 's0-n800-p270-f0.4-0.2-0.4') and `steps`.
    """
    folder = work / f"autoencoder-{draw}-{steps}"
    if (folder / "config.json").is_file():
        return folder
    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    vae = build_tiny_pipeline(seed=seed, pretrained_autoencoder=False).vae
    fit = fit_autoencoder(
        vae,
        load_pixels([paths[i] for i in train], 64, 1),
        steps=steps,
        batch_size=defaults["autoencoder_batch_size"],
        learning_rate=defaults["autoencoder_learning_rate"],
        seed=seed,
        show_progress=False,
    )
    print(f"fitted {steps} autoencoder steps in {fit.seconds:.0f} s -> {folder}")
    vae.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--patients", type=int, default=270)
    parser.add_argument("--fractions", default="0.4,0.2,0.4")
    parser.add_argument("--grain", default="1,0.5,0")
    parser.add_argument("--vae", type=Path, action="append", default=[])
    parser.add_argument(
        "--fit-steps",
        default="",
        help="comma-separated step counts: fit `tiny`'s autoencoder that long on the train split "
        "(as `finetune` does) and add each to the --vae list",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fractions = tuple(float(x) for x in args.fractions.split(","))
    manifest = real_data(args.work, args.seed, args.n, args.patients, fractions)
    oracle = oracle_run(args.work, manifest, args.seed)
    extractor = load_run_extractor(oracle)
    labels = list(extractor.labels)
    real = read_manifest(manifest)
    idx = np.flatnonzero(real.rows["split"].to_numpy() != "train")
    rows = real.rows.iloc[idx]
    held = rows["split"].to_numpy()
    paths = real.image_paths()
    pixels = load_pixels([paths[i] for i in idx], 64, 1)
    p_real = extractor(_u8(pixels))["probs"]
    thresholds = label_thresholds(p_real[held == "val"], rows[held == "val"], labels)
    reference = rates(p_real, rows, held, labels, thresholds)

    renderings: dict[str, np.ndarray] = {"real images on disk": p_real}
    for factor in (float(x) for x in args.grain.split(",")):
        images = redraw(rows, args.n, args.seed, args.patients, factor, 64)
        if factor == 1.0:
            same = all(
                np.array_equal(a, np.asarray(b)) for a, b in zip(images, _u8(pixels), strict=True)
            )
            print(f"redrawn at grain x1 identical to the images on disk: {same}")
        renderings[f"redrawn, grain x{factor:g}"] = extractor(images)["probs"]
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")
    for steps in (int(x) for x in args.fit_steps.split(",") if x):
        draw = draw_name(manifest)
        args.vae.append(fitted_autoencoder(args.work, draw, args.seed, paths, train, steps))
    train = train[:GRAIN_FIT_IMAGES]
    train_pixels = load_pixels([paths[i] for i in train], 64, 1)
    if args.vae:
        truth = drawn_grain(real.rows.iloc[train], args.n, args.seed, args.patients)
        print(f"film grain drawn on the train images (std per band): {truth}")
    for vae_dir in args.vae:
        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
        recon = reconstruct(vae, pixels)
        renderings[f"autoencoder {vae_dir}"] = extractor(_u8(recon))["probs"]
        model = fit_grain(gray01(train_pixels), gray01(reconstruct(vae, train_pixels)))
        grainy = add_grain(gray01(recon), model, list(range(len(recon))))
        print(f"film grain measured behind {vae_dir}: {np.round(model.std, 4).tolist()}")
        images = list(np.round(grainy * 255).astype(np.uint8))
        renderings[f"autoencoder {vae_dir} + film grain"] = extractor(images)["probs"]

    records = []
    for name, probs in renderings.items():
        for label, (hit, false) in rates(probs, rows, held, labels, thresholds).items():
            real_pos, real_neg = reference[label]
            records.append(
                {
                    "rendering": name,
                    "finding": label,
                    "hit": hit,
                    "real_pos": real_pos,
                    "false": false,
                    "real_neg": real_neg,
                    "hit_ok": hit >= 0.8 * real_pos,
                    "false_ok": false <= real_neg + 0.10,
                }
            )
    table = pd.DataFrame(records)
    pd.set_option("display.width", 200)
    print(f"oracle {oracle}; real val/test studies of data seed {args.seed}: {len(idx)}")
    print(table.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
