"""`classifier.dataset.ManifestDataset` (your own trainer) and the README's example loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.data import label_targets
from classifier.dataset import ManifestDataset
from manifests.errors import UserError
from manifests.io import read_manifest
from manifests.mixing import mix_manifests
from tests.helpers import synthesis_config

LABELS = ("Support Devices", "Pleural Effusion")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic(tiny_generator_dir, phantom_manifest, tmp_path_factory) -> Path:
    """A real (tiny, untrained) synthesis run from phantom reports: 6 images."""
    from augmentor.synthesize import synthesize

    out = tmp_path_factory.mktemp("synthetic")
    labels = "pleural_effusion:3,support_devices:3"
    cfg = synthesis_config(tiny_generator_dir, phantom_manifest, out, labels=labels, batch_size=6)
    return synthesize(cfg).manifest


def test_items_follow_the_uncertain_policy(phantom_manifest):
    m = read_manifest(phantom_manifest)
    rows = m.rows[m.rows["split"] == "train"].reset_index(drop=True)
    # Edema: never mentioned in the phantom reports (NaN); labels come in manifest order
    labels = tuple(label for label in m.labels if label in {*LABELS, "Edema"})
    values = rows[list(labels)].to_numpy(np.float32)
    assert (values == -1).any() and np.isnan(values).any()  # the fixture has both
    for policy in ("ignore", "zeros", "ones"):
        ds = ManifestDataset(phantom_manifest, "train", labels, policy, image_size=32)
        assert len(ds) == len(rows) and ds.labels == labels
        targets, mask = label_targets(values, policy)
        for i in (0, len(ds) - 1, int(np.flatnonzero((values == -1).any(axis=1))[0])):
            item = ds[i]
            assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
            assert item["image"].min() >= 0 and item["image"].max() <= 1
            np.testing.assert_array_equal(item["target"].numpy(), targets[i])
            np.testing.assert_array_equal(item["mask"].numpy(), mask[i])


def test_mixed_manifest_transform_and_filters(phantom_manifest, synthetic):
    real, syn = read_manifest(phantom_manifest), read_manifest(synthetic)
    mixed = mix_manifests(real, syn, mix=0.5, train_size=12, seed=0)
    ds = ManifestDataset(mixed, "train", LABELS, image_size=16, transform=lambda x: x * 0 + 7)
    assert len(ds) == 12 and (ds.rows["source"] == "synthetic").sum() == 6
    assert torch.all(ds[0]["image"] == 7)  # the transform hook ran
    only = ManifestDataset(mixed, "train", LABELS, image_size=16, source="synthetic")
    assert len(only) == 6 and set(only.rows["target_label"]) == set(LABELS)
    batch = next(iter(torch.utils.data.DataLoader(only, batch_size=4)))
    assert batch["image"].shape == (4, 1, 16, 16) and batch["target"].shape == (4, 2)
    with pytest.raises(UserError, match="no rows left"):
        ManifestDataset(syn, "test", LABELS)
    with pytest.raises(UserError, match="uncertain"):
        ManifestDataset(syn, "train", LABELS, uncertain="maybe")


def test_readme_own_trainer_example_runs(phantom_manifest, synthetic):
    spec = importlib.util.spec_from_file_location("own_trainer", ROOT / "docs" / "own_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model, data, loss = module.main(
        phantom_manifest, synthetic, backbone="test_resnet", image_size=32
    )
    assert len(data) > 0 and len(data.labels) >= 1 and np.isfinite(loss)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, len(data.labels))
