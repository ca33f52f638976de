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
    from tests.helpers import write_split_phantom

    out = tmp_path_factory.mktemp("phantom")
    write_split_phantom(out, n=48, seed=0, patients=16)
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
