"""Shared fixtures: a small phantom manifest (split by patient) and a saved tiny generator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests run in parallel workers on small machines: one intra-op thread each keeps them fast.
torch.set_num_threads(int(os.environ.get("CXRAUG_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """48 phantom images (64 px, 16 patients) with reports and labels, split 0.6/0.2/0.2."""
    from manifests.io import read_manifest, write_manifest
    from manifests.phantom import write_phantom_dataset
    from manifests.splits import split_by_patient

    out = tmp_path_factory.mktemp("phantom")
    path = write_phantom_dataset(out, n=48, size=64, seed=0, patients=16)
    split = split_by_patient(read_manifest(path), (0.6, 0.2, 0.2), seed=0)
    write_manifest(split, path, overwrite=True)
    return out


@pytest.fixture(scope="session")
def phantom_manifest(phantom_dir) -> Path:
    return phantom_dir / "manifest.parquet"


@pytest.fixture(scope="session")
def tiny_generator_dir(tmp_path_factory) -> Path:
    """The untrained `tiny` base saved as a plain diffusers pipeline directory."""
    from augmentor.base import build_tiny_pipeline

    out = tmp_path_factory.mktemp("tiny") / "generator"
    build_tiny_pipeline(seed=0).save_pretrained(out, safe_serialization=True)
    return out
