"""`tiny`'s pretrained autoencoder: shipped, loaded, kept frozen; its recipe's patient pool."""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from augmentor import generator
from augmentor.base import (
    TINY_AUTOENCODER_DIR,
    TINY_AUTOENCODER_RECIPE,
    TINY_AUTOENCODER_WEIGHTS,
    build_tiny_pipeline,
    load_pipeline,
    load_tiny_autoencoder,
    tiny_autoencoder_recipe,
)
from augmentor.config import FinetuneConfig, check_finetune_config
from augmentor.finetune import finetune
from benchmarks import fit_tiny_autoencoder as script
from manifests.errors import UserError
from manifests.files import file_sha256
from manifests.io import read_manifest
from manifests.phantom import phantom_studies, write_phantom_dataset
from study.presets import PRESETS

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _shipped() -> dict[str, torch.Tensor]:
    return load_file(TINY_AUTOENCODER_DIR / TINY_AUTOENCODER_WEIGHTS)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _cfg(manifest: Path, out: Path, **kw) -> FinetuneConfig:
    return FinetuneConfig(
        manifest=str(manifest),
        base="tiny",
        out=str(out),
        batch_size=4,
        max_steps=2,
        checkpointing_steps=2,
        show_progress=False,
        **kw,
    )


# ------------------------------------------------------------------------ the shipped files


def test_tiny_base_loads_the_shipped_autoencoder_its_recipe_names():
    recipe = tiny_autoencoder_recipe()
    weights = TINY_AUTOENCODER_DIR / TINY_AUTOENCODER_WEIGHTS
    assert file_sha256(weights) == recipe["weights_sha256"]
    assert weights.stat().st_size < 5 * 2**20  # a few MB at most
    vae = load_pipeline("tiny").vae
    assert _same({k: v.detach() for k, v in vae.state_dict().items()}, _shipped())
    config = json.loads((TINY_AUTOENCODER_DIR / "config.json").read_text())
    assert vae.config.scaling_factor == pytest.approx(config["scaling_factor"])
    assert vae.config.scaling_factor == pytest.approx(recipe["result"]["scaling_factor"])
    assert vae.config.scaling_factor != 0.18215  # measured on the pool, not SD's

    # The text encoder and UNet draw the same random weights either way.
    fresh = build_tiny_pipeline(pretrained_autoencoder=False)
    pretrained = build_tiny_pipeline()
    for name in ("unet", "text_encoder"):
        a, b = getattr(fresh, name).state_dict(), getattr(pretrained, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert not _same(fresh.vae.state_dict(), _shipped())


def test_shipped_autoencoder_reconstructs_a_phantom_it_never_saw(phantom_manifest):
    """The demo-like fixture's images (patients outside the pool) come back close."""
    from augmentor.autoencoder import reconstruction_error
    from augmentor.latents import load_pixels

    pixels = load_pixels(read_manifest(phantom_manifest).image_paths()[:16], 64, 1)
    shipped = reconstruction_error(build_tiny_pipeline().vae, pixels)
    fresh = reconstruction_error(build_tiny_pipeline(pretrained_autoencoder=False).vae, pixels)
    assert shipped < 0.1 < fresh


def test_weights_that_differ_from_the_recipe_are_refused(tmp_path):
    folder = tmp_path / "tiny_vae"
    shutil.copytree(TINY_AUTOENCODER_DIR, folder)
    vae = build_tiny_pipeline(pretrained_autoencoder=False).vae
    recipe = json.loads((folder / TINY_AUTOENCODER_RECIPE).read_text())
    (folder / TINY_AUTOENCODER_RECIPE).write_text(json.dumps({**recipe, "weights_sha256": "0"}))
    with pytest.raises(UserError, match="sha256 differs"):
        load_tiny_autoencoder(vae, folder)

    # Weights of another architecture (digest matching) are refused by the strict load.
    from diffusers import AutoencoderKL

    other = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=4)
    other.save_pretrained(folder, safe_serialization=True)
    digest = file_sha256(folder / TINY_AUTOENCODER_WEIGHTS)
    (folder / TINY_AUTOENCODER_RECIPE).write_text(json.dumps({"weights_sha256": digest}))
    with pytest.raises(UserError, match="does not fit tiny's autoencoder"):
        load_tiny_autoencoder(vae, folder)


def test_pyproject_ships_the_autoencoder_as_package_data():
    """A non-editable install gets every file of the folder (setuptools package-data globs)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["augmentor"]
    files = [p.relative_to(ROOT / "augmentor").as_posix() for p in TINY_AUTOENCODER_DIR.iterdir()]
    assert {"config.json", TINY_AUTOENCODER_WEIGHTS, TINY_AUTOENCODER_RECIPE} <= {
        Path(f).name for f in files
    }
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_from_tiny_keeps_the_shipped_autoencoder_frozen(phantom_manifest, tmp_path):
    out = tmp_path / "gen"
    finetune(_cfg(phantom_manifest, out))
    record = generator.read_generator_record(out)
    assert record["global_step"] == 2
    assert record["autoencoder_fit"] is None
    assert not generator.autoencoder_dir(out).exists()
    assert _same(load_file(out / "vae" / TINY_AUTOENCODER_WEIGHTS), _shipped())
    saved = json.loads((out / "vae" / "config.json").read_text())
    assert saved["scaling_factor"] == pytest.approx(
        tiny_autoencoder_recipe()["result"]["scaling_factor"]
    )


def test_fit_autoencoder_fits_tiny_from_scratch_on_the_train_images(phantom_manifest, tmp_path):
    out = tmp_path / "gen"
    finetune(_cfg(phantom_manifest, out, fit_autoencoder=True, autoencoder_steps=2))
    fit = generator.read_generator_record(out)["autoencoder_fit"]
    assert fit["steps"] == 2 and fit["error_after"] < fit["error_before"]
    # From the random initialisation: before fitting it is far worse than the shipped one.
    assert fit["error_before"] > 2 * tiny_autoencoder_recipe()["result"]["error_after"]
    fitted = load_file(out / "vae" / TINY_AUTOENCODER_WEIGHTS)
    assert not _same(fitted, _shipped())
    assert _same(fitted, load_file(generator.autoencoder_dir(out) / TINY_AUTOENCODER_WEIGHTS))


def test_fit_autoencoder_needs_the_tiny_base(tmp_path):
    cfg = _cfg(tmp_path / "m.parquet", tmp_path / "o", fit_autoencoder=True)
    cfg.base = str(tmp_path / "sd")
    with pytest.raises(UserError, match="--fit-autoencoder: only with --base tiny"):
        check_finetune_config(cfg)


# ---------------------------------------------------------------------- recipe and its pool


def test_recipe_pool_shares_no_patient_with_any_preset():
    pool = phantom_studies(
        script.POOL_IMAGES,
        seed=script.POOL_SEED,
        patients=script.POOL_PATIENTS,
        first_patient=script.POOL_FIRST_PATIENT,
    )
    pool_ids = {s.patient.patient_id for s in pool}
    assert len(pool_ids) == script.POOL_PATIENTS
    assert min(pool_ids) == script.pool_patient_ids()[0]
    assert max(pool_ids) == script.pool_patient_ids()[1]
    assert {s.study_id for s in pool}.isdisjoint(s.study_id for s in phantom_studies(1500))
    for name, preset in PRESETS.items():
        data = preset.build().data
        patients = data.phantom_patients or data.phantom_n // 3
        assert patients < script.POOL_FIRST_PATIENT, name
        for seed in (0, 1, 2, script.POOL_SEED):
            drawn = phantom_studies(data.phantom_n, seed=seed, patients=data.phantom_patients)
            assert pool_ids.isdisjoint(s.patient.patient_id for s in drawn), (name, seed)


def test_first_patient_numbers_the_draw_and_keeps_default_draws(tmp_path):
    default = phantom_studies(12, seed=4, patients=4)
    assert default == phantom_studies(12, seed=4, patients=4, first_patient=0)
    shifted = phantom_studies(12, seed=4, patients=4, first_patient=2)
    # Patient k of the shifted draw is patient k + 2 of the default numbering.
    assert shifted[0].patient == default[6].patient
    assert [s.patient.patient_id for s in shifted[::3]] == [
        "phantom-p00002", "phantom-p00003", "phantom-p00004", "phantom-p00005",
    ]  # fmt: skip
    with pytest.raises(UserError, match="--first-patient"):
        phantom_studies(12, first_patient=-1)
    path = write_phantom_dataset(tmp_path, n=3, size=32, patients=1, first_patient=7)
    manifest = read_manifest(path)
    assert set(manifest.rows["patient_id"]) == {"phantom-p00007"}
    assert json.loads(manifest.metadata["cxraug.phantom"])["first_patient"] == 7


def test_shipped_recipe_is_the_scripts_recipe():
    """The weights were fitted by the script's recipe as it stands."""
    shipped = tiny_autoencoder_recipe()
    expected = script.recipe(shipped["fit"]["steps"])
    assert shipped["data"] == expected["data"]
    assert shipped["fit"] == expected["fit"]
    assert shipped["fit"]["steps"] == script.STEPS
    assert shipped["result"]["steps"] == script.STEPS
    first, last = shipped["data"]["patient_ids"]
    assert first == f"phantom-p{script.POOL_FIRST_PATIENT:05d}"
    assert shipped["data"]["patients"] == script.POOL_PATIENTS


# ------------------------------------------------------------ a per-run fit checkpoints


def test_an_interrupted_autoencoder_fit_resumes_to_the_same_weights(monkeypatch, tmp_path):
    from augmentor import autoencoder

    torch.manual_seed(0)
    pixels = torch.rand(12, 1, 64, 64) * 2 - 1

    def fit(vae, **kw):
        return autoencoder.fit_autoencoder(
            vae,
            pixels,
            steps=6,
            batch_size=4,
            seed=3,
            show_progress=False,
            log=lambda _: None,
            **kw,
        )

    whole = build_tiny_pipeline(pretrained_autoencoder=False).vae
    fit(whole)

    saved = autoencoder._save_fit_state
    state_dir = tmp_path / "fit-state"

    def save_then_die(folder, state, gens, step, before):
        saved(folder, state, gens, step, before)
        if step == 4:
            raise KeyboardInterrupt  # a kill right after the step-4 checkpoint

    monkeypatch.setattr(autoencoder, "_save_fit_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(
            build_tiny_pipeline(pretrained_autoencoder=False).vae,
            checkpoint_dir=state_dir,
            checkpoint_every=2,
        )
    monkeypatch.setattr(autoencoder, "_save_fit_state", saved)
    assert (state_dir / "vae.safetensors").is_file()

    messages = []
    resumed = build_tiny_pipeline(pretrained_autoencoder=False).vae
    autoencoder.fit_autoencoder(
        resumed, pixels, steps=6, batch_size=4, seed=3, show_progress=False,
        log=messages.append, checkpoint_dir=state_dir, checkpoint_every=2,
    )  # fmt: skip
    assert any("resuming the fit at step 4/6" in m for m in messages)
    assert _same(resumed.state_dict(), whole.state_dict())
    assert resumed.config.scaling_factor == whole.config.scaling_factor
