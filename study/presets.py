"""Ready-made studies, and picking one: `load_study_config(preset, config)`.

`PRESETS` names each one (`Preset`: what it is, how long it takes, its configuration); the
CLI's `study --help` and the docs read the descriptions and timings from there
(`presets_help`, `presets_table`). `load_study_config` takes a preset and overrides it with
a TOML file (`study.config`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from augmentor.config import FAST_SAMPLER
from classifier.arms import Arm
from manifests.errors import UserError
from study.config import (
    ClassifierStageConfig,
    DataConfig,
    GeneratorConfig,
    ReportStageConfig,
    StudyConfig,
    SynthesisStageConfig,
    apply_overrides,
    load_toml,
    resolve_paths,
    toml_value,
)


def against_its_control(arm: Arm, label: str = "macro") -> str:
    """A primary endpoint: `arm` against its step-matched control, on `label`."""
    return f"{arm.name} vs {arm.control().name}, {label}"


DEMO_LABELS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation")


def demo_preset() -> StudyConfig:
    """Phantoms and the tiny base on a laptop CPU: a small real training set (40% of 270
    patients, about 320 images) and a large test set (40%, for informative intervals); the
    generator fine-tuned on that train split (UNet and text encoder; tiny's pretrained
    autoencoder stays frozen; images drawn balanced by finding, side and lobe); 80 synthetic images for each
    of the four findings the phantom draws plus 40 from 'No Finding' reports. Arms: real-only
    on the whole train split (the oracle of the fidelity table) and, at 80 real images,
    real, mix0.5 and its step-matched control; three seeds each. Prompts state the prompt
    patient's age and sex; a second synthetic set, the same counts balanced over sex x age
    group cells, trains the twin arm mix0.5-balanced-n80 (does balancing narrow the
    subgroup gap?). Primary endpoint, declared here: mix0.5-n80 against its step-matched
    control, macro AUROC.
    """
    return StudyConfig(
        name="demo",
        data=DataConfig(
            phantom_n=800,
            phantom_size=64,
            phantom_patients=270,
            fractions=[0.4, 0.2, 0.4],
            oracle_images=320,
        ),
        generator=GeneratorConfig(
            {
                "base": "tiny",
                "max_steps": 3000,  # the side of a consolidation is learned late, in steps
                "batch_size": 16,
                "learning_rate": 2e-3,
                "train_text_encoder": True,
                "checkpointing_steps": 100,
                "snr_gamma": 5.0,
                "lr_scheduler": "cosine",
                "lr_warmup_steps": 50,
                # a right-middle-lobe consolidation is 6 of 320 images: draw them more often
                "balance_labels": DEMO_LABELS,
            }
        ),
        synthesis=SynthesisStageConfig(
            {
                "labels": "cardiomegaly:80,pleural_effusion:80,pneumothorax:80,consolidation:80",
                "negatives": 40,
                "scheduler": "ddim",
                "num_inference_steps": 20,
                "batch_size": 40,
                # the phantom's reports state age and sex in a share of them: the generator
                # learns the header, so prompts may state it
                "demographic_prompts": True,
            },
            balanced_set=["sex", "age_group"],
        ),
        classifier=ClassifierStageConfig(
            {
                "labels": DEMO_LABELS,
                "backbone": "resnet10t",
                "image_size": 64,
                "epochs": 8,
                "batch_size": 32,
                "lr": 2e-3,
                "patience": 0,
            },
            seeds=[0, 1, 2],
            mixes=[0.5],
            synthetic_arm=False,
            pretrain_finetune=False,
            real_sizes=[80],
            full_size_mixes=False,
            oversample_controls=True,
        ),
        report=ReportStageConfig({"primary": against_its_control(Arm(mix=0.5, real_size=80))}),
    )


def paper_preset() -> StudyConfig:
    """RoentGen's arms on phantoms: 1,200 phantoms split 0.5/0.15/0.35 by patient (600 train
    images, about 420 test); the demo's generator recipe, written out here so that a change
    to the demo leaves this preset as it is, for 1,500 steps of 32; the fast sampler,
    560 images per finding plus 200 'No Finding' (2,440 unique images). Three generators
    on the whole train split (seeds 0, 1, 2), every arm that uses synthetic images trained
    with three classifier seeds on each one's set, so the intervals hold the generators'
    variance. Arms: real, mix0.5 with its step-matched and positives-matched controls,
    synthetic-only (as many images as real), synthetic-only 4x, pretrain on synthetic then
    fine-tune on real, and the real-size sweep 50/100/200 (real, mix0.5, both controls):
    with the whole split, four sizes on every curve; three seeds. The fidelity oracle trains on 600 phantoms of patients of its
    own. Chosen for compute before the run: only the smallest size, 50, gets generators of
    its own (one per classifier seed, fine-tuned for 500 steps on that seed's 50 images
    and prompted by their reports), so mix0.5-n50 uses 50 real labelled studies in all;
    the mixed arms at 100, 200 and 600 use the whole-split generators (transfer, as the
    report states). Primary endpoint, declared here: mix0.5-n50 against its step-matched
    control, macro AUROC (equal information, the smallest real size, where synthetic images
    can matter most); every other comparison is secondary.
    """
    demo = demo_preset()
    fast_scheduler, fast_steps, fast_guidance = FAST_SAMPLER
    return StudyConfig(
        name="paper",
        data=DataConfig(
            phantom_n=1200,
            phantom_size=64,
            phantom_patients=400,
            fractions=[0.5, 0.15, 0.35],
            oracle_images=600,
        ),
        generator=GeneratorConfig(
            {
                "base": "tiny",
                "max_steps": 1500,
                "batch_size": 32,
                "learning_rate": 2e-3,
                "train_text_encoder": True,
                "checkpointing_steps": 100,
                "snr_gamma": 5.0,
                "lr_scheduler": "cosine",
                "lr_warmup_steps": 50,
            },
            replicates=3,
            data="per_size",
            per_size=[50.0],
            per_size_max_steps=500,
        ),
        synthesis=replace(demo.synthesis, balanced_set=[]).with_settings(
            # 4 x 560 + 200 = 2,440 unique images: the 4x synthetic-only arm (606 real train
            # images: 2,424) repeats none
            labels="cardiomegaly:560,pleural_effusion:560,pneumothorax:560,consolidation:560",
            negatives=200,
            scheduler=fast_scheduler,
            num_inference_steps=fast_steps,
            guidance_scale=fast_guidance,
            demographic_prompts=False,
        ),
        classifier=replace(
            demo.classifier,
            synthetic_arm=True,
            full_size_mixes=True,
            larger_synthetic=[4.0],
            pretrain_finetune=True,
            real_sizes=[50, 100, 200],
        ),
        report=ReportStageConfig({"primary": against_its_control(Arm(mix=0.5, real_size=50))}),
    )


def smoke_preset() -> StudyConfig:
    """Every stage at toy size (for tests), a sex-balanced twin of the mixed arm included;
    primary endpoint: mix0.5 against its step-matched control, macro AUROC."""
    return StudyConfig(
        name="smoke",
        data=DataConfig(
            phantom_n=120, phantom_size=64, phantom_patients=40, fractions=[0.5, 0.2, 0.3]
        ),
        generator=GeneratorConfig().with_settings(max_steps=4, batch_size=8),
        synthesis=SynthesisStageConfig(
            {
                "labels": "pleural_effusion:6,pneumothorax:6",
                "num_inference_steps": 2,
                "batch_size": 12,
                "demographic_prompts": True,
            },
            balanced_set=["sex"],
        ),
        classifier=ClassifierStageConfig(
            {
                "labels": ("Pleural Effusion", "Pneumothorax"),
                "backbone": "test_resnet",
                "image_size": 64,
                "epochs": 1,
                "batch_size": 16,
                "lr": 3e-3,
                "patience": 0,
            },
            seeds=[0],
            mixes=[0.5],
        ),
        # 12 test patients: no label reaches the default 10 positive patients of the macro
        report=ReportStageConfig(
            {
                "primary": against_its_control(Arm(mix=0.5)),
                "n_boot": 100,
                "min_positive_patients": 1,
            },
            # their own tests train them; at toy size they would only cost time
            privacy_audit=False,
            demographic_fidelity=False,
        ),
    )


@dataclass(frozen=True)
class Preset:
    """A ready-made study: what it is and how long it takes (what `study --help` and the
    docs say), and its configuration."""

    name: str
    summary: str
    duration: str
    build: Callable[[], StudyConfig]

    def describe(self) -> str:
        return f"{self.name} ({self.summary}; {self.duration})"


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "demo",
            "phantoms and the tiny base: prompt fidelity, real vs mixed at 80 images, subgroups",
            "about 20 minutes on 2 CPU cores, alone",
            demo_preset,
        ),
        Preset(
            "paper",
            "RoentGen's arms, 3 generators and a 4-size sweep on phantoms",
            "about 100 minutes on 2 CPU cores",
            paper_preset,
        ),
        Preset("smoke", "every stage at toy size, for tests", "under a minute", smoke_preset),
    )
}


def presets_help() -> str:
    """The presets in one sentence, as `cxraug study --help` gives them."""
    return "; ".join(preset.describe() for preset in PRESETS.values()) + "."


def presets_table() -> str:
    """The presets as a Markdown table, as the docs show it (a test keeps them equal):
    `python -c "from study.presets import presets_table; print(presets_table())"`."""
    rows = [f"| `{p.name}` | {p.summary} | {p.duration} |" for p in PRESETS.values()]
    return "\n".join(["| preset | what it is | time |", "|---|---|---|", *rows])


def presets_keys() -> str:
    """Every key a study TOML takes that a preset sets or the study owns, per table, with
    its help and each preset's value, as Markdown (docs/presets.md shows it; a test keeps
    them equal): `python -c "from study.presets import presets_keys; print(presets_keys())"`.
    Any other setting of a stage's command is a key too (`cxraug finetune -h` and so on)."""
    built = {name: p.build() for name, p in PRESETS.items()}
    default = StudyConfig()
    names = [*built, "without a preset"]
    out = []
    for section in ("data", "generator", "synthesis", "classifier", "report"):
        configs = [getattr(c, section) for c in [*built.values(), default]]
        rows = []
        if section == "data":
            keys = [(f.name, f) for f in fields(DataConfig)]
        else:
            cls = type(configs[0])
            command = {f.name: f for f in fields(cls.COMMAND)}
            own = {f.name: f for f in fields(cls) if f.name != "settings"}
            preset_keys = {k for c in configs for k in c.settings}
            keys = [(k, own[k]) for k in own] + [
                (k, command[k]) for k in command if k in preset_keys
            ]
        for key, f in keys:
            values = []
            for c in configs:
                value = (
                    getattr(c, key) if section == "data" or key in c.own_fields() else c.value(key)
                )
                values.append("" if value is None else f"`{toml_value(value)}`")
            rows.append(f"| `{key}` | {f.metadata.get('help', '')} | " + " | ".join(values) + " |")
        head = f"### [{section}]\n\n| key | what it sets | " + " | ".join(names) + " |"
        out.append("\n".join([head, "|---|---|" + "---|" * len(names), *rows]))
    return "\n\n".join(out)


def load_study_config(preset: str | None = None, config: Path | None = None) -> StudyConfig:
    """A preset (default 'demo' when no file is given) overridden by a TOML file.

    The TOML file has the shape of :class:`StudyConfig`: top-level `name`, and tables
    `[data]`, `[generator]`, `[synthesis]`, `[classifier]`, `[report]`. Unknown keys and
    wrong types are a UserError naming the key and the file.
    """
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    base = PRESETS[preset].build() if preset else (StudyConfig() if config else demo_preset())
    if config is None:
        return base
    data = load_toml(config)
    cfg = resolve_paths(apply_overrides(base, data, str(config)), Path(config).parent)
    return cfg if preset or "name" in data else replace(cfg, name=Path(config).stem)


__all__ = [
    "PRESETS",
    "Preset",
    "demo_preset",
    "load_study_config",
    "paper_preset",
    "presets_help",
    "presets_table",
    "smoke_preset",
]
