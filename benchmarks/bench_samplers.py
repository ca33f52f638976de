"""Which sampler draws what RoentGen's PNDM 75 draws, for fewer UNet evaluations?

    python benchmarks/bench_samplers.py [--model runs/demo/generator]
        [--prompts runs/demo/data/manifest.parquet] [--oracle runs/demo/runs/real-seed0]
        [--out runs/bench_samplers] [--per-finding 40] [--negatives 40]
        [--reference pndm:75:4] [--reference-seeds 0,1] [--samplers dpm++,unipc,ddim]
        [--steps 10,20,30] [--guidance 4] [--sweep ddim:20] [--sweep-guidance 1,2,4,7]
        [--batch-size 40] [--z 1.96] [--threads 0] [--tiny]

For one generator (default: the demo study's fine-tuned `tiny` generator), the script
synthesizes the same label-balanced set (`--per-finding` images per oracle label, prompted
by real train reports, plus `--negatives` 'No Finding' prompts) once per sampling setting
with `augmentor.synthesize.synthesize`:

* the reference, RoentGen's protocol (PNDM, 75 steps, guidance 4), once per
  `--reference-seeds` seed (two by default), so that the reference's own noise is measured:
  a new seed draws other prompts from the pool and other starting noise;
* DPM-Solver++ ("dpm++"), UniPC ("unipc") and DDIM ("ddim") at `--steps` steps, guidance
  `--guidance`;
* a guidance sweep (`--sweep-guidance`) at one sampler and step count (`--sweep`).

Every non-reference setting uses the first reference seed: the same prompts and starting
noise as the first reference run. Per setting it prints one row of one table:

* UNet evaluations per image, counted (not assumed) by a forward hook on the UNet during a
  two-image pipeline call: latent rows the UNet saw / images. diffusers'
  StableDiffusionPipeline guides (`do_classifier_free_guidance`) when the guidance scale is
  above 1, and then runs each step on the conditional and unconditional latents together,
  so a step is 2 evaluations per image at guidance > 1 and 1 at guidance <= 1; PNDM with
  `skip_prk_steps` (Stable Diffusion's config) repeats its first timestep, one extra step;
* images/s: images / time spent in the pipeline calls of the `synthesize` run (text
  encoding, denoising, decoding, grain: `augmentor.synthesize.generate_images`, timed by a
  wrapper), as `bench_synthesize.py` counts it; the run's wall time (plus plan, pipeline
  load, generator digest, PNGs, shards and merge, a fixed cost per run) is in the JSON;
* prompt fidelity as `augmentor.generator_metrics.prompt_fidelity_table` computes it for
  `evaluate-generator` (the same code path: `augmentor.evaluate.oracle_tables`), the oracle
  being `--oracle`, a classifier run trained on real train images (thresholds by Youden's J
  on real val): per finding the hit rate (images prompted for it that the oracle calls
  positive), the false-finding rate (images whose prompt negates or does not mention it
  that the oracle calls positive) and the side-match rate (the side detector agrees with the
  side the prompt states);
* KID (`augmentor.metrics.kid_from_features`: mean and sd over subsets) of the synthetic
  images against the real train images, on the oracle's pooled features.

The pick, "the cheapest setting whose fidelity is within the reference's own noise":
with k >= 2 reference runs, for every rate metric above (each finding's hit, false-finding
and side rate) with reference rates r_1..r_k over n_1..n_k images, a candidate's rate c over
n images passes when

    |c - mean(r)| <= max(max(r) - min(r),  z * se),
    se = sqrt(p * (1 - p) * (1 / n + sum(1 / n_i) / k**2)),
    p = (sum(r_i * n_i) + 1) / (sum(n_i) + 2),

i.e. within the spread the reference runs showed, or within z (`--z`, 1.96) binomial
standard errors of the difference between the candidate's rate and the reference mean,
whichever is wider (p, the pooled reference rate, is kept off 0 and 1 so that a reference
that never fires still tolerates the odd hit). A rate the reference measured but the
candidate did not (or the other way round) fails; one neither measured is skipped. KID
passes when the candidate's mean lies in [min KID_i - max sd_i, max KID_i + max sd_i] over
the reference runs. A setting is within the reference's noise when every metric passes.
The checks are two-sided on purpose: the question is whether a cheaper setting is a drop-in
replacement that draws what the reference draws, not whether it scores better; a setting
that differs in a direction that looks better shows in the table. The pick is the
non-reference setting within the noise with the fewest UNet evaluations per image (ties:
more images/s); its speed-up is against the reference's UNet evaluations and against the
mean images/s of the reference runs. When no setting is within the noise, it says so.

The default run (200 images per setting, 14 syntheses, about 152,000 UNet evaluations)
should take about 10 minutes on 2 CPU cores with the demo generator (estimated from its ~8
images/s at DDIM 20 with guidance, 320 evaluations/s; not yet timed); the elapsed time is
printed. The synthetic sets go under
`--out/sets/`, the table to `--out/bench_samplers.json`. `--tiny` runs the same path in
well under a minute on an untrained `tiny` generator, 48 phantom images and a one-epoch
oracle built under `--out/tiny/` (its numbers mean nothing; it exists so a test can run
the script end to end), with `TINY_DEFAULTS` as defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor import synthesize as synthesize_module
from augmentor.base import load_pipeline
from augmentor.config import SCHEDULERS, SynthesisConfig
from augmentor.eval_config import GeneratorEvalConfig
from augmentor.evaluate import Embedded, oracle_tables
from augmentor.features import FeatureExtractor, embed_images, image_hashes, load_run_extractor
from augmentor.metrics import kid_from_features
from augmentor.synthesize import generate_images, set_scheduler, synthesize
from manifests.files import write_json
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from manifests.splits import split_by_patient

RESULTS_FILE = "bench_samplers.json"
# Per finding: the rate metric -> (prompt_fidelity_table column, column of its image count).
RATE_METRICS = {
    "hit": ("hit_rate", "n_prompted"),
    "false": ("false_finding_rate", "n_unprompted"),
    "side": ("side_hit_rate", "n_sided"),
}
COUNT_PROMPT = "Small left pleural effusion. No pneumothorax."  # any prompt counts the same
# --tiny: a run of seconds (the untrained generator's numbers mean nothing).
TINY_DEFAULTS = {
    "per_finding": 2,
    "negatives": 2,
    "reference": "pndm:3:4",
    "steps": "1,2",
    "sweep": "ddim:2",
    "batch_size": 16,
}
TINY_LABELS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation")

Rate = tuple[float, int]  # (share of images, how many images it is a share of)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One way of sampling: scheduler (a key of SCHEDULERS), steps, guidance, plan seed."""

    scheduler: str
    steps: int
    guidance: float
    seed: int = 0
    reference: bool = False

    @property
    def sampler(self) -> tuple[str, int, float]:
        return self.scheduler, self.steps, self.guidance

    @property
    def name(self) -> str:
        tag = f" (ref, seed {self.seed})" if self.reference else ""
        return f"{self.scheduler} {self.steps} g{self.guidance:g}{tag}"

    @property
    def folder(self) -> str:
        return f"{self.scheduler.replace('+', 'p')}-{self.steps}-g{self.guidance:g}-s{self.seed}"


def parse_sampler(text: str) -> tuple[str, int, float | None]:
    """`pndm:75:4` -> ('pndm', 75, 4.0); `ddim:20` -> ('ddim', 20, None)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0].strip().lower() not in SCHEDULERS:
        raise ValueError(
            f"{text!r}: expected SCHEDULER:STEPS[:GUIDANCE], scheduler one of "
            f"{', '.join(SCHEDULERS)}"
        )
    guidance = float(parts[2]) if len(parts) == 3 else None
    return parts[0].strip().lower(), int(parts[1]), guidance


def plan_settings(
    reference: tuple[str, int, float],
    reference_seeds: Sequence[int],
    samplers: Sequence[str],
    steps: Sequence[int],
    guidance: float,
    sweep: tuple[str, int],
    sweep_guidance: Sequence[float],
) -> list[Setting]:
    """The reference once per seed, then each sampler x steps, then the guidance sweep;
    a candidate that repeats an earlier one or the reference is dropped."""
    if len(set(reference_seeds)) < 2:
        raise ValueError("the reference needs two or more distinct seeds to measure its noise")
    settings = [Setting(*reference, seed=s, reference=True) for s in reference_seeds]
    seed = reference_seeds[0]
    candidates = [Setting(name, n, guidance, seed) for name in samplers for n in steps]
    candidates += [Setting(sweep[0], sweep[1], g, seed) for g in sweep_guidance]
    seen = {settings[0].sampler}
    for candidate in candidates:
        if candidate.sampler not in seen:
            seen.add(candidate.sampler)
            settings.append(candidate)
    return settings


# ---------------------------------------------------------------- cost


def count_unet_evaluations(pipe, setting: Setting, prompt: str = COUNT_PROMPT) -> float:
    """UNet evaluations per image of one pipeline call at `setting`, counted by a hook.

    Counts latent rows through the UNet, not calls: with classifier-free guidance one call
    evaluates the conditional and unconditional latents of every image together.
    """
    rows = 0

    def count(_module, args, kwargs) -> None:
        nonlocal rows
        rows += int((args[0] if args else kwargs["sample"]).shape[0])

    handle = pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
    try:
        set_scheduler(pipe, setting.scheduler)
        generate_images(pipe, [prompt, prompt], [0, 1], setting.steps, setting.guidance)
    finally:
        handle.remove()
    return rows / 2


# ---------------------------------------------------------------- fidelity


@dataclass
class Measured:
    """What one setting cost and how its images look to the oracle."""

    setting: Setting
    unet_per_image: float
    n_images: int
    sampling_s: float  # in pipeline calls
    rates: dict[str, Rate]  # "<finding> <hit|false|side>" -> rate
    kid: tuple[float, float]  # mean, sd over subsets
    synthesis_s: float = float("nan")  # the whole synthesize() call
    fidelity: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.sampling_s if self.sampling_s > 0 else float("nan")


@dataclass
class OracleView:
    """The oracle, the real manifest and its embedded real images (computed once)."""

    extractor: FeatureExtractor
    real: Manifest
    real_path: Path
    hashes: list[str]
    features: np.ndarray
    probs: np.ndarray
    cache: Path

    @property
    def train_features(self) -> np.ndarray:
        return self.features[(self.real.rows["split"] == "train").to_numpy()]


def load_oracle(run: Path, real_path: Path, cache: Path) -> OracleView:
    extractor = load_run_extractor(run, flag="--oracle")
    real = read_manifest(real_path)
    real = real.with_rows(real.rows[real.rows["source"] == "real"])
    hashes = image_hashes(real)
    out = embed_images(real.image_paths(), hashes, [extractor], cache)[0]
    return OracleView(extractor, real, real_path, hashes, out["features"], out["probs"], cache)


def rates_from_fidelity(table: pd.DataFrame) -> dict[str, Rate]:
    """Each finding's rates from a `prompt_fidelity_table`, where it has images to rate."""
    rates = {}
    for row in table.to_dict("records"):
        for metric, (column, count) in RATE_METRICS.items():
            if int(row[count]) > 0:
                rates[f"{row['finding']} {metric}"] = (float(row[column]), int(row[count]))
    return rates


def judge(synthetic_path: Path, oracle: OracleView) -> tuple[pd.DataFrame, tuple[float, float]]:
    """The prompt-fidelity table (as evaluate-generator computes it) and KID vs real train."""
    synthetic = read_manifest(synthetic_path)
    hashes = image_hashes(synthetic)
    out = embed_images(synthetic.image_paths(), hashes, [oracle.extractor], oracle.cache)[0]
    empty = np.empty((0, 0))  # thumbnails: only memorization reads them
    emb = Embedded(
        syn_hashes=hashes,
        real_hashes=oracle.hashes,
        syn_features=out["features"],
        real_features=oracle.features,
        syn_pixels=empty,
        real_pixels=empty,
        syn_probs=out["probs"],
        real_probs=oracle.probs,
    )
    cfg = GeneratorEvalConfig(synthetic=synthetic_path, real=oracle.real_path, out=oracle.cache)
    tables, _ = oracle_tables(synthetic, oracle.real, oracle.extractor, emb, oracle.cache, cfg)
    kid = kid_from_features(out["features"], oracle.train_features)
    return tables["prompt_fidelity"], kid


# ---------------------------------------------------------------- the pick rule


def rate_margin(reference: Sequence[Rate], n: int, z: float) -> float:
    """How far a rate over `n` images may lie from the reference runs' mean (docstring)."""
    values = [r for r, _ in reference]
    counts = [c for _, c in reference]
    k = len(reference)
    p = (sum(r * c for r, c in reference) + 1) / (sum(counts) + 2)
    se = math.sqrt(p * (1 - p) * (1 / n + sum(1 / c for c in counts) / k**2))
    return max(max(values) - min(values), z * se)


def kid_window(reference: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """[min mean - max sd, max mean + max sd] over the reference runs' KIDs."""
    means, sds = [m for m, _ in reference], [s for _, s in reference]
    return min(means) - max(sds), max(means) + max(sds)


def departures(candidate: Measured, references: Sequence[Measured], z: float) -> list[str]:
    """Every metric on which `candidate` lies outside the reference's noise (empty: within)."""
    out = []
    keys = set(candidate.rates).union(*(r.rates for r in references))
    for key in sorted(keys):
        ref = [r.rates.get(key, (float("nan"), 0)) for r in references]
        ref_ok = all(c > 0 and math.isfinite(v) for v, c in ref)
        value, n = candidate.rates.get(key, (float("nan"), 0))
        mine_ok = n > 0 and math.isfinite(value)
        if not ref_ok and not mine_ok:
            continue
        if ref_ok != mine_ok:
            out.append(f"{key}: measured in only one of candidate and reference")
            continue
        mean, margin = float(np.mean([v for v, _ in ref])), rate_margin(ref, n, z)
        if abs(value - mean) > margin + 1e-12:
            out.append(f"{key} {value:.2f} vs ref {mean:.2f} +- {margin:.2f}")
    low, high = kid_window([r.kid for r in references])
    kid = candidate.kid[0]
    if not (math.isfinite(kid) and low - 1e-12 <= kid <= high + 1e-12):
        out.append(f"KID {kid:.4f} outside ref [{low:.4f}, {high:.4f}]")
    return out


def pick_cheapest(results: Sequence[Measured], z: float) -> Measured | None:
    """The non-reference setting within the reference's noise with the fewest UNet
    evaluations per image (ties: more images/s); None when no setting is."""
    references = [r for r in results if r.setting.reference]
    within = [r for r in results if not r.setting.reference and not departures(r, references, z)]
    if not within:
        return None
    return min(within, key=lambda r: (r.unet_per_image, -r.images_per_s))


def speedup(pick: Measured, results: Sequence[Measured]) -> dict[str, float]:
    """The pick against the reference: x fewer UNet evaluations, x more images/s."""
    references = [r for r in results if r.setting.reference]
    ref_rate = float(np.mean([r.images_per_s for r in references]))
    return {
        "unet": references[0].unet_per_image / pick.unet_per_image,
        "images_per_s": pick.images_per_s / ref_rate,
        "reference_unet_per_image": references[0].unet_per_image,
        "reference_images_per_s": ref_rate,
    }


# ---------------------------------------------------------------- running


@contextlib.contextmanager
def timed_sampling(seconds: list[float]) -> Iterator[None]:
    """Append the duration of every pipeline call `synthesize` makes to `seconds`."""
    original = synthesize_module.generate_images

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    synthesize_module.generate_images = timed
    try:
        yield
    finally:
        synthesize_module.generate_images = original


def label_spec(labels: Sequence[str], per_finding: int) -> str:
    return ",".join(f"{label}:{per_finding}" for label in labels)


def run_setting(setting: Setting, args, labels: Sequence[str], oracle: OracleView, pipe):
    """Synthesize the set at `setting`, time it, count its UNet evaluations, judge it."""
    unet = count_unet_evaluations(pipe, setting)
    out = args.out / "sets" / setting.folder
    config = SynthesisConfig(
        model=str(args.model),
        prompts_from=str(args.prompts),
        out=str(out),
        labels=label_spec(labels, args.per_finding),
        negatives=args.negatives,
        seed=setting.seed,
        scheduler=setting.scheduler,
        num_inference_steps=setting.steps,
        guidance_scale=setting.guidance,
        batch_size=args.batch_size,
        overwrite=True,
    )
    calls: list[float] = []
    start = time.perf_counter()
    with timed_sampling(calls):
        result = synthesize(config)
    wall = time.perf_counter() - start
    fidelity, kid = judge(result.manifest, oracle)
    n = sum(result.counts.values())
    rates = rates_from_fidelity(fidelity)
    return Measured(setting, unet, n, sum(calls), rates, kid, wall, fidelity)


def table(results: Sequence[Measured], z: float) -> pd.DataFrame:
    """One row per setting: cost, per-finding rates, KID and the verdict."""
    references = [r for r in results if r.setting.reference]
    records = []
    for r in results:
        record = {
            "setting": r.setting.name,
            "UNet/img": r.unet_per_image,
            "img/s": r.images_per_s,
        }
        for key, (value, _) in r.rates.items():
            finding, metric = key.rsplit(" ", 1)
            record[f"{finding[:4]} {metric}"] = value
        record["KID"] = r.kid[0]
        off = [] if r.setting.reference else departures(r, references, z)
        record["within ref"] = "ref" if r.setting.reference else ("yes" if not off else "no")
        records.append(record)
    return pd.DataFrame(records)


def to_json(results: Sequence[Measured], pick: Measured | None, z: float, extra: dict) -> dict:
    references = [r for r in results if r.setting.reference]

    def finite(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    rows = []
    for r in results:
        rows.append(
            {
                "setting": r.setting.name,
                "scheduler": r.setting.scheduler,
                "steps": r.setting.steps,
                "guidance": r.setting.guidance,
                "seed": r.setting.seed,
                "reference": r.setting.reference,
                "unet_per_image": r.unet_per_image,
                "n_images": r.n_images,
                "sampling_s": r.sampling_s,
                "synthesis_s": r.synthesis_s,
                "images_per_s": r.images_per_s,
                "rates": {k: {"rate": finite(v), "n": n} for k, (v, n) in r.rates.items()},
                "kid_mean": finite(r.kid[0]),
                "kid_sd": finite(r.kid[1]),
                "departures": [] if r.setting.reference else departures(r, references, z),
            }
        )
    chosen = None
    if pick is not None:
        chosen = {
            "setting": pick.setting.name,
            "sampler": list(pick.setting.sampler),
            "speedup": speedup(pick, results),
        }
    return {"rows": rows, "pick": chosen, "z": z, **extra}


def build_tiny_inputs(work: Path) -> tuple[Path, Path, Path]:
    """An untrained `tiny` generator, 48 split phantom images and a one-epoch oracle."""
    from augmentor.base import build_tiny_pipeline
    from classifier.config import TrainConfig
    from classifier.train import train_classifier

    generator = work / "generator"
    build_tiny_pipeline(seed=0).save_pretrained(generator, safe_serialization=True)
    source = write_phantom_dataset(
        work / "phantom", n=48, size=64, seed=0, patients=16, overwrite=True
    )
    manifest = split_by_patient(read_manifest(source), (0.6, 0.2, 0.2), seed=0)
    prompts = write_manifest(manifest, source, overwrite=True)
    oracle = work / "oracle"
    train_classifier(
        TrainConfig(
            real=prompts,
            out=oracle,
            backbone="test_resnet",
            labels=TINY_LABELS,
            image_size=32,
            epochs=1,
            batch_size=8,
            lr=3e-3,
            patience=0,
            n_boot=20,
            overwrite=True,
        ),
        log=lambda _line: None,
    )
    return generator, prompts, oracle


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/generator"))
    parser.add_argument("--prompts", type=Path, default=Path("runs/demo/data/manifest.parquet"))
    parser.add_argument("--oracle", type=Path, default=Path("runs/demo/runs/real-seed0"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_samplers"))
    parser.add_argument("--per-finding", type=int, default=40)
    parser.add_argument("--negatives", type=int, default=40)
    parser.add_argument("--reference", default="pndm:75:4", help="SCHEDULER:STEPS:GUIDANCE")
    parser.add_argument("--reference-seeds", default="0,1")
    parser.add_argument("--samplers", default="dpm++,unipc,ddim")
    parser.add_argument("--steps", default="10,20,30")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--sweep", default="ddim:20", help="SCHEDULER:STEPS of the sweep")
    parser.add_argument("--sweep-guidance", default="1,2,4,7")
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--z", type=float, default=1.96, help="binomial margin, in SEs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--tiny", action="store_true", help="untrained tiny model, seconds")
    if "--tiny" in argv:
        parser.set_defaults(**TINY_DEFAULTS)
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> list[Setting]:
    scheduler, steps, guidance = parse_sampler(args.reference)
    sweep = parse_sampler(args.sweep)
    return plan_settings(
        (scheduler, steps, 4.0 if guidance is None else guidance),
        [int(s) for s in args.reference_seeds.split(",")],
        [s.strip().lower() for s in args.samplers.split(",")],
        [int(s) for s in args.steps.split(",")],
        args.guidance,
        (sweep[0], sweep[1]),
        [float(g) for g in args.sweep_guidance.split(",")],
    )


def report(results: Sequence[Measured], pick: Measured | None, z: float) -> None:
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 50)
    frame = table(results, z)
    rates = [c for c in frame.columns if c.endswith((" hit", " false", " side"))]
    frame = frame.round({"img/s": 2, "KID": 4, **{c: 2 for c in rates}})
    frame["UNet/img"] = frame["UNet/img"].map("{:g}".format)
    print(frame.to_string(index=False, na_rep="-"))
    references = [r for r in results if r.setting.reference]
    low, high = kid_window([r.kid for r in references])
    print(
        f"reference noise (z = {z:g}): KID in [{low:.4f}, {high:.4f}]; per rate, the reference "
        "runs, their mean and how far a set of the same size may lie from it:"
    )
    for key in sorted(set().union(*(r.rates for r in references))):
        ref = [r.rates.get(key, (float("nan"), 0)) for r in references]
        if all(c > 0 and math.isfinite(v) for v, c in ref):
            runs = " / ".join(f"{v:.2f}" for v, _ in ref)
            mean, margin = np.mean([v for v, _ in ref]), rate_margin(ref, ref[0][1], z)
            print(f"  {key}: {runs} (n {ref[0][1]}), mean {mean:.2f} +- {margin:.2f}")
    for r in results:
        off = [] if r.setting.reference else departures(r, references, z)
        if off:
            print(f"{r.setting.name} is outside the reference's noise: " + "; ".join(off))
    if pick is None:
        print("pick: none: no setting is within the reference's noise")
        return
    gain = speedup(pick, results)
    print(
        f"pick: {pick.setting.name}: {pick.unet_per_image:g} UNet evaluations per image vs "
        f"{gain['reference_unet_per_image']:g} ({gain['unet']:.2f}x fewer), "
        f"{pick.images_per_s:.2f} vs {gain['reference_images_per_s']:.2f} images/s "
        f"({gain['images_per_s']:.2f}x)"
    )


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        settings = settings_from(args)  # a typo fails before anything runs
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.model, args.prompts, args.oracle = build_tiny_inputs(args.out / "tiny")
    oracle = load_oracle(args.oracle, args.prompts, args.out / "feature_cache")
    labels = [label for label in oracle.extractor.labels if label != "No Finding"]
    pipe = load_pipeline(args.model)  # for counting UNet evaluations (and a warm-up)
    pipe.set_progress_bar_config(disable=True)
    results = []
    for setting in settings:
        measured = run_setting(setting, args, labels, oracle, pipe)
        print(
            f"{setting.name}: {measured.n_images} images, {measured.sampling_s:.1f} s sampling "
            f"({measured.images_per_s:.2f}/s; {measured.synthesis_s:.1f} s in all), "
            f"{measured.unet_per_image:g} UNet evaluations per image",
            flush=True,
        )
        results.append(measured)
    pick = pick_cheapest(results, args.z)
    real = oracle.real.rows["split"].to_numpy()
    baseline = kid_from_features(oracle.features[real == "test"], oracle.train_features)
    report(results, pick, args.z)
    print(f"real test vs real train KID (for scale): {baseline[0]:.4f} +- {baseline[1]:.4f}")
    elapsed = time.perf_counter() - start
    print(f"elapsed {elapsed:.0f} s")
    extra = {
        "elapsed_s": elapsed,
        "real_test_kid": list(baseline),
        "model": str(args.model),
        "oracle": str(args.oracle),
        "per_finding": args.per_finding,
        "negatives": args.negatives,
        "tiny": args.tiny,
        "torch_threads": torch.get_num_threads(),
    }
    document = to_json(results, pick, args.z, extra)
    write_json(args.out / RESULTS_FILE, document, overwrite=True)
    return document


if __name__ == "__main__":
    main()
