"""Film grain: measured as the white part of the autoencoder's residual, added back per row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from augmentor.config import FinetuneConfig, SynthesisConfig
from augmentor.finetune import finetune
from augmentor.grain import GrainModel, add_grain, fit_grain
from augmentor.synthesize import synthesize
from manifests.images import load_image
from manifests.io import read_manifest


def _smooth(rng: np.random.Generator, n: int, size: int = 64) -> np.ndarray:
    """Smooth images in [0.1, 0.9]: a coarse random grid upsampled by 8."""
    coarse = rng.uniform(0.1, 0.9, size=(n, size // 8, size // 8))
    return np.kron(coarse, np.ones((8, 8)))


def test_fit_grain_recovers_white_grain_per_intensity_band():
    rng = np.random.default_rng(0)
    clean = _smooth(rng, 40)
    sigma = np.where(clean < 0.5, 0.02, 0.05)  # darker bands grainier than brighter ones
    images = clean + sigma * rng.standard_normal(clean.shape)
    model = fit_grain(images, clean)
    std = np.asarray(model.std)
    assert len(std) == 16 and model.n_images == 40
    assert np.allclose(std[3:7], 0.02, rtol=0.1), std  # bands 0.19-0.44
    assert np.allclose(std[9:14], 0.05, rtol=0.1), std  # bands 0.56-0.88
    assert std[0] == std[1] and std[15] == std[14]  # no pixels below 0.1 or above 0.9: nearest


def test_fit_grain_does_not_count_blurred_structure_as_grain():
    """A reconstruction that only blurs (residual correlated between neighbours) has no grain."""
    rng = np.random.default_rng(1)
    clean = _smooth(rng, 20)
    stripes = 0.1 * (np.arange(64) // 4 % 2)[None, None, :]  # 4-px structure the blur loses
    images = clean + stripes
    blurred = clean + 0.05
    total = np.sqrt(np.mean((images - blurred) ** 2))
    model = fit_grain(images, blurred)
    assert max(model.std) < 0.35 * total, (model.std, total)
    with pytest.raises(ValueError, match="one shape"):
        fit_grain(images, blurred[:, :32])


def test_add_grain_per_row_seed_and_intensity():
    model = GrainModel(tuple([0.0] * 8 + [0.04] * 8), n_images=1)
    images = np.concatenate([np.full((1, 64, 64), 0.3), np.full((1, 64, 64), 0.7)]).astype(
        np.float32
    )
    out = add_grain(images, model, [5, 6])
    assert np.array_equal(out[0], images[0])  # a band without grain is untouched
    assert abs(float(out[1].std()) - 0.04) < 0.005
    alone = add_grain(images[1:], model, [6])[0]
    assert np.array_equal(alone, out[1])  # a row's grain depends on its seed only
    other = add_grain(images[1:], model, [7])[0]
    assert not np.array_equal(other, out[1])
    assert GrainModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model


@pytest.fixture(scope="module")
def grain_generator(phantom_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grain") / "gen"
    finetune(
        FinetuneConfig(
            manifest=str(phantom_manifest),
            base="tiny",
            out=str(out),
            batch_size=4,
            max_steps=2,
            autoencoder_steps=2,
            show_progress=False,
        ),
        log=lambda _t: None,
    )
    return out


def test_finetune_from_tiny_measures_grain_and_synthesize_adds_it(
    grain_generator, phantom_manifest, tmp_path
):
    record = json.loads((grain_generator / "cxraug.json").read_text())
    grain = GrainModel.from_dict(record["film_grain"])
    assert len(grain.std) == 16 and max(grain.std) > 0
    assert record["config"]["film_grain"] is None and "film_grain_fit" in record["timings"]

    def config(name: str, film_grain: bool, **extra) -> SynthesisConfig:
        return SynthesisConfig(
            model=str(grain_generator),
            prompts_from=str(phantom_manifest),
            out=str(tmp_path / name),
            labels="pleural_effusion:2",
            num_inference_steps=2,
            film_grain=film_grain,
            **extra,
        )

    def run(name: str, film_grain: bool):
        out = tmp_path / name
        synthesize(config(name, film_grain))
        identity = json.loads((out / "synthesis.json").read_text())["identity"]
        images = [load_image(p) for p in read_manifest(out / "manifest.parquet").image_paths()]
        return identity, np.stack(images).astype(int)

    with_grain, grainy = run("grain", True)
    without, clean = run("clean", False)
    assert with_grain["film_grain"] is True and without["film_grain"] is False
    assert with_grain["generator_digest"] == without["generator_digest"]
    diff = grainy - clean
    assert diff.std() > 1.0  # grey levels: the grain is there
    assert abs(diff.mean()) < 1.0  # and it is zero-mean noise, not a shift
    # A resumed run must keep the grain setting it started with.
    from manifests.errors import UserError

    with pytest.raises(UserError, match="film_grain"):
        synthesize(config("grain", False, resume=True))


def test_plain_pipeline_folder_has_no_grain(tiny_generator_dir, phantom_manifest, tmp_path):
    out = tmp_path / "plain"
    synthesize(
        SynthesisConfig(
            model=str(tiny_generator_dir),
            prompts_from=str(phantom_manifest),
            out=str(out),
            labels="pleural_effusion:1",
            num_inference_steps=1,
        )
    )
    assert json.loads((out / "synthesis.json").read_text())["identity"]["film_grain"] is False
