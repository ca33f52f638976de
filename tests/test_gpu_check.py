"""benchmarks/gpu_check.py: the CPU `--tiny` run fills every row, so the GPU check cannot rot."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from benchmarks import gpu_check

MODELS = ("sd15", "sd21-base")


def expected_keys() -> list[str]:
    """Every row a run of both models with --compile prints (spelled out here on purpose)."""
    keys = []
    for m in MODELS:
        keys.append(f"finetune/{m}/cache-fill")
        for part in ("unet", "unet+te"):
            keys += [f"finetune/{m}/{part}/{k}" for k in ("cxraug", "diffusers", "ratio")]
            keys.append(f"finetune/{m}/{part}/cxraug-ckpt")
            keys += [f"memory/{m}/{part}/{k}" for k in ("cxraug", "diffusers", "cxraug-ckpt")]
        keys += [f"sample/{m}/{b}" for b in ("b8-contiguous", "b1", "b8", "b32")]
    keys += ["sample/sd15/b8-compile", "classifier/densenet121/train", "memory/densenet121/train"]
    return keys


def test_tiny_run_prints_every_row_with_the_cpu_note(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    # The eager backend runs torch.compile's graph capture without inductor's C++ build.
    argv = ["--tiny", "--compile", "--compile-backend", "eager", "--out", str(out)]
    result = gpu_check.main(argv)

    rows = {r["key"]: r for r in result["rows"]}
    assert list(rows) == [r["key"] for r in result["rows"]], "duplicate row keys"
    missing = [k for k in expected_keys() if k not in rows]
    assert not missing, f"rows missing: {missing}"
    assert sorted(rows) == sorted(expected_keys()), "rows not in the test: add them here"
    for key, row in rows.items():
        assert row["value"] is not None and row["value"] > 0, (key, row)
        assert gpu_check.TINY_NOTE in row["note"], key
        assert not row["note"].startswith(("failed", "skipped")), (key, row["note"])

    # Gradient checkpointing is really on in its rows: fewer tensors kept for backward.
    for m in MODELS:
        for part in ("unet", "unet+te"):
            kept = rows[f"memory/{m}/{part}/cxraug-ckpt"]["value"]
            assert kept < rows[f"memory/{m}/{part}/cxraug"]["value"], (m, part)
    ratio = rows["finetune/sd15/unet/ratio"]["value"]
    cxraug, ref = rows["finetune/sd15/unet/cxraug"]["value"], rows["finetune/sd15/unet/diffusers"]
    assert ratio == pytest.approx(cxraug / ref["value"])

    printed = capsys.readouterr().out
    table = printed[printed.index("section  ") :]
    table_rows = [line for line in table.splitlines()[2:] if line.strip() and "total" not in line]
    assert len(table_rows) == len(rows)
    assert all(gpu_check.TINY_NOTE in line for line in table_rows)
    for section in ("fine-tune:", "memory:", "sampling:", "classifier:"):
        assert section in printed

    saved = json.loads(out.read_text())
    assert saved["complete"] is True and saved["tiny"] is True
    assert saved["rows"] == result["rows"]


def test_without_cuda_or_tiny_it_exits_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        gpu_check.main([])
    message = str(exc.value.code)
    assert "no CUDA device" in message and "--tiny" in message and "\n" not in message


def test_configs_are_the_published_models():
    """Parameter counts of the released SD 1.5 / 2.1-base components (built on `meta`)."""
    tokenizer = SimpleNamespace(
        vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407
    )
    published = {  # unet, vae, text encoder
        "sd15": (859_520_964, 83_653_863, 123_060_480),
        "sd21-base": (865_910_724, 83_653_863, 340_387_840),
    }
    for name, counts in published.items():
        models = gpu_check.build_models(name, False, tokenizer, torch.device("meta"), seed=0)
        parts = (models.unet, models.vae, models.text_encoder)
        assert tuple(sum(p.numel() for p in m.parameters()) for m in parts) == counts, name
    # RoentGen's sampler: 75 PNDM steps are 76 UNet calls in diffusers, doubled by guidance.
    assert gpu_check.unet_calls_per_image(75, 4.0) == 152
    assert gpu_check.unet_calls_per_image(75, 1.0) == 76
