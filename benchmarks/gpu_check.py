"""GPU check: fine-tune, sampling and classifier speed and memory at Stable Diffusion size.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--compile] [--models sd15,sd21-base]
                                   [--budget-s 420] [--batch-size 8] [--steps 10] ...
    python benchmarks/gpu_check.py --tiny      # CPU, tiny configs: checks every code path

One command, no downloads: UNet, autoencoder and text encoder are built with random weights
from the published Stable Diffusion v1.5 and v2.1-base `config.json` values (random weights
are enough for speed and memory); the tokenizer is the real CLIP vocabulary
(`augmentor.base.tiny_tokenizer`). It prints one table and, with `--out`, writes it as JSON
(rewritten after every row, so a run cut short keeps what it measured):

* fine-tune images/s at 512 px (bf16 autocast over fp32 weights, AdamW), UNet only and UNet +
  text encoder: cxraug's step (`augmentor.finetune`: latents drawn from cached autoencoder
  posteriors by `sample_latents`, report embeddings cached while the text encoder is frozen,
  `diffusion_loss`) against the step of diffusers'
  `examples/text_to_image/train_text_to_image.py` (autoencoder and text encoder run every
  step, frozen models cast to bf16), on the same model in the same run, and their ratio.
  Both take batches from tensors already on the GPU: no image decoding on either side;
* peak GPU memory (`torch.cuda.max_memory_allocated`) of those steps, and of cxraug's step
  with gradient checkpointing (its images/s too);
* sampling seconds per image at 75 PNDM steps with classifier-free guidance (diffusers' PNDM
  makes 76 UNet calls for 75 steps, each on the conditional and the unconditional half:
  152 UNet evaluations per image), batch 1 / 8 / 32, bf16 weights, SDPA attention
  (`AttnProcessor2_0`), channels-last UNet, through `augmentor.synthesize.generate_images`
  (what `cxraug synthesize` calls); batch 8 also with a contiguous UNet, and with `--compile`
  also with `torch.compile` of the UNet (first model; run last, in time held back for it);
* classifier images/s of timm densenet121 (1 channel, 14 labels) at 224 px, a train step as
  `classifier.train` takes it (augment, normalise, bf16 autocast, masked BCE, AdamW).

Each timed block runs warm-up iterations, then timed ones between `torch.cuda.synchronize()`
calls. A wall-clock budget (`--budget-s`, default 420 s, so under 8 minutes with start-up on
an H100) guards the run: each block gets a share of the time left, weighted by its expected
cost, and its timed iterations are cut to fit (never below one; the row's note says so).

`--tiny` runs the same code on the CPU with tiny configs of both models, 64 px, 3 sampling
steps, fp32 and small batches, in under a minute; every row is marked "CPU tiny mode: not a
GPU figure", and its memory rows count parameters, gradients, optimizer state and the
tensors autograd saves for backward instead of GPU memory. Without a CUDA device and without
`--tiny` it exits with one line saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from augmentor.base import CLIP_CONTEXT_LENGTH, tiny_tokenizer  # noqa: E402
from augmentor.finetune import diffusion_loss  # noqa: E402
from augmentor.latents import encode_posterior, sample_latents  # noqa: E402
from augmentor.synthesize import _quiet_diffusers, generate_images  # noqa: E402
from augmentor.train_inputs import encode_prompts, tokenize_prompts  # noqa: E402
from classifier.data import AugmentConfig, augment_batch, normalize  # noqa: E402
from classifier.models import build_model, model_normalization  # noqa: E402

TINY_NOTE = "CPU tiny mode: not a GPU figure"
MODELS = ("sd15", "sd21-base")
CLASSIFIER = "densenet121"
MODEL_TITLES = {"sd15": "SD 1.5", "sd21-base": "SD 2.1-base", CLASSIFIER: CLASSIFIER}
CLASSIFIER_LABELS = 14  # the CheXpert label set
GIB = 2**30
PROMPTS = (
    "Moderate right pleural effusion with adjacent atelectasis.",
    "Small left apical pneumothorax. No pleural effusion.",
    "Cardiomegaly. No focal consolidation, effusion or pneumothorax.",
    "No acute cardiopulmonary process.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Endotracheal tube terminates 4 cm above the carina. Lungs are clear.",
)

# ------------------------------------------------------------------------ model configs

# From the published config.json files: runwayml/stable-diffusion-v1-5 (unet, vae,
# text_encoder = openai/clip-vit-large-patch14's text tower) and
# stabilityai/stable-diffusion-2-1-base (unet; text_encoder = OpenCLIP ViT-H/14's text tower
# with its last layer dropped, 23 layers). Both use the same KL autoencoder.
_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3

# What the two bases' UNets share; each adds its cross-attention width and heads.
_UNET_COMMON = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=_DOWN,
    up_block_types=_UP,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    center_input_sample=False,
    mid_block_scale_factor=1,
)
UNET_CONFIGS = {
    "sd15": dict(_UNET_COMMON, cross_attention_dim=768, attention_head_dim=8),
    "sd21-base": dict(
        _UNET_COMMON,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    ),
}
# The text towers' sizes and activation, one row per base (build_models adds the rest).
_TEXT_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_act",
    "projection_dim",
)
TEXT_CONFIGS = {
    "sd15": dict(zip(_TEXT_FIELDS, (768, 3072, 12, 12, "quick_gelu", 768), strict=True)),
    "sd21-base": dict(zip(_TEXT_FIELDS, (1024, 4096, 23, 16, "gelu", 512), strict=True)),
}
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)
# Both bases' scheduler config (SD 2.1-base predicts epsilon, like SD 1.5).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    set_alpha_to_one=False,
    steps_offset=1,
    skip_prk_steps=True,
)


def tiny_configs(name: str) -> tuple[dict, dict, dict]:
    """The same block layout at toy width: (unet, text, vae) configs for 64 px on a CPU."""
    unet = dict(UNET_CONFIGS[name])
    unet.update(
        sample_size=8,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=32 if name == "sd15" else 48,
        attention_head_dim=8 if name == "sd15" else (2, 4, 4, 4),
    )
    hidden = unet["cross_attention_dim"]
    text = dict(TEXT_CONFIGS[name])
    text.update(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        projection_dim=hidden,
    )
    vae = dict(VAE_CONFIG)
    vae.update(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8)
    vae["sample_size"] = 64
    return unet, text, vae


@dataclass
class Models:
    """One base's components, as diffusers and transformers classes (no wrappers)."""

    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object  # DDPM, what fine-tuning adds noise with
    sample_scheduler: object  # PNDM, RoentGen's sampler

    def parameters_count(self) -> int:
        return sum(
            p.numel() for m in (self.unet, self.vae, self.text_encoder) for p in m.parameters()
        )


def build_models(name: str, tiny: bool, tokenizer, device: torch.device, seed: int) -> Models:
    """Random-weight components of `name` (published configs, or their tiny version).

    Built under `torch.device(device)` so that the random initialisation runs on the GPU
    (seconds, not minutes of CPU init for ~1.3 billion parameters).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if tiny:
        unet_cfg, text_cfg, vae_cfg = tiny_configs(name)
    else:
        unet_cfg, text_cfg, vae_cfg = UNET_CONFIGS[name], TEXT_CONFIGS[name], VAE_CONFIG
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=tokenizer.vocab_size,
                max_position_embeddings=CLIP_CONTEXT_LENGTH,
                layer_norm_eps=1e-5,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **text_cfg,
            )
        )
    sample_scheduler = PNDMScheduler(**SCHEDULER_CONFIG)
    return Models(
        name=name,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        # As `augmentor.finetune` does: the training noise schedule from the base's scheduler.
        noise_scheduler=DDPMScheduler.from_config(sample_scheduler.config),
        sample_scheduler=sample_scheduler,
    )


# ------------------------------------------------------------------------------ results


@dataclass
class Row:
    """One line of the table; `key` is stable (tests and JSON readers use it)."""

    key: str  # section/model/what, e.g. "finetune/sd15/unet/cxraug"
    section: str
    model: str
    setting: str
    value: float | None
    unit: str
    note: str = ""


SECTIONS = {
    "finetune": "fine-tune",
    "memory": "memory",
    "sample": "sampling",
    "classifier": "classifier",
}


@dataclass
class Settings:
    """What one run measures and how long it may take (resolved from the flags)."""

    tiny: bool
    models: tuple[str, ...]
    resolution: int
    batch_size: int
    warmup: int
    steps: int
    sample_steps: int
    sample_batches: tuple[int, ...]
    sample_repeats: int
    guidance_scale: float
    classifier_size: int
    classifier_batch: int
    compile: bool
    compile_mode: str
    compile_backend: str
    compile_reserve_s: float
    budget_s: float
    seed: int
    threads: int | None


class Budget:
    """Wall-clock guard: each timed block gets a share of the time left, by expected cost.

    `reserve` seconds are held back for the `torch.compile` row, which runs last.
    """

    def __init__(self, seconds: float, weights: dict[str, float], reserve: float = 0.0) -> None:
        self.seconds, self.weights, self.reserve = seconds, dict(weights), reserve
        self.start = time.perf_counter()
        self.pending = set(weights)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left of the whole budget."""
        return self.seconds - self.elapsed()

    def share(self, block: str) -> float:
        """Seconds this block may spend; the blocks after it share the rest."""
        total = sum(self.weights[b] for b in self.pending) or 1.0
        allowed = max(0.0, self.left() - self.reserve) * self.weights.get(block, 1.0) / total
        self.pending.discard(block)
        return allowed

    def release_reserve(self, block: str, weight: float = 1.0) -> None:
        """Give the held-back time to one more block (the compile row, run last)."""
        self.reserve = 0.0
        self.weights[block] = weight
        self.pending.add(block)

    def iterations(self, block: str, requested: int, per_iter_s: float) -> tuple[int, str]:
        """Timed iterations for a block whose warm-up took `per_iter_s` each; a note if cut."""
        fits = int(self.share(block) / max(per_iter_s, 1e-9))
        n = max(1, min(requested, fits))
        return n, (f"{n} of {requested} timed iterations (time budget)" if n < requested else "")


def block_weights(s: Settings) -> dict[str, float]:
    """Expected share of the timed work per block (guesses from SD-size step costs)."""
    weights: dict[str, float] = {}
    for m in s.models:
        for part in ("unet", "unet+te"):
            for loop in ("cxraug", "diffusers", "cxraug-ckpt"):
                weights[f"finetune/{m}/{part}/{loop}"] = 1.0
        weights[f"sample/{m}/b8-contiguous"] = 1.5
        for b in s.sample_batches:
            weights[f"sample/{m}/b{b}"] = 1.0 + 3.0 * b / 32
    weights["classifier/densenet121/train"] = 0.5
    return weights


@dataclass
class Run:
    """Device, precision, the time budget, the rows so far and where they are written."""

    settings: Settings
    device: torch.device
    dtype: torch.dtype  # sampling weights and training autocast dtype
    budget: Budget
    out: Path | None = None
    environment: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    section_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        # bf16 autocast over fp32 weights, as accelerate's `mixed_precision="bf16"` does;
        # fp32 without autocast in tiny mode.
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    @property
    def precision(self) -> str:
        return "fp32" if self.dtype == torch.float32 else "bf16 autocast"

    def add(self, key: str, setting: str, value, unit: str, note: str = "") -> Row:
        """Record a row (section and model read from the key), print it, save the JSON."""
        section, model = key.split("/")[:2]
        if self.settings.tiny:
            note = _join(note, TINY_NOTE)
        value = None if value is None else float(value)
        row = Row(key, SECTIONS[section], MODEL_TITLES[model], setting, value, unit, note)
        self.rows.append(row)
        print(f"  {row.model}, {setting}: {_format_value(value)} {unit}  {note}", flush=True)
        self.save(complete=False)
        return row

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.section_seconds[name] = time.perf_counter() - start

    def result(self, complete: bool) -> dict:
        return {
            "kind": "cxraug.gpu_check",
            "complete": complete,
            "tiny": self.settings.tiny,
            "note": TINY_NOTE if self.settings.tiny else "",
            "settings": asdict(self.settings),
            "captions": captions(self),
            "environment": self.environment,
            "elapsed_s": self.budget.elapsed(),
            "section_seconds": self.section_seconds,
            "rows": [asdict(r) for r in self.rows],
        }

    def save(self, complete: bool) -> None:
        """Write the JSON (atomically): after every row, so a crash keeps what was measured."""
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.result(complete), indent=2) + "\n")
        os.replace(tmp, self.out)


def captions(run: Run) -> dict[str, str]:
    """What every row of a section shares (printed above the table)."""
    s = run.settings
    calls = unet_calls_per_image(s.sample_steps, s.guidance_scale)
    weights = "fp32" if run.dtype == torch.float32 else "bf16"
    if run.device.type == "cuda":
        memory = "peak GPU memory of the step (torch.cuda.max_memory_allocated; all models on GPU)"
    else:
        memory = (
            "CPU stand-in for peak memory: parameters, gradients, optimizer state and the "
            "tensors autograd saves for backward in one step"
        )
    return {
        "fine-tune": (
            f"{s.resolution} px, batch {s.batch_size}, {run.precision}, AdamW; cxraug = cached "
            "posteriors (+ cached text while the text encoder is frozen); diffusers loop = "
            "autoencoder + text encoder every step; ratio = cxraug / diffusers loop"
        ),
        "memory": memory,
        "sampling": (
            f"augmentor.synthesize.generate_images, PNDM {s.sample_steps} steps, guidance "
            f"{s.guidance_scale:g} ({calls} UNet evaluations per image), {s.resolution} px, "
            f"{weights} weights, SDPA attention"
        ),
        "classifier": (
            f"{CLASSIFIER} (timm, 1 channel, {CLASSIFIER_LABELS} labels), {s.classifier_size} px, "
            f"batch {s.classifier_batch}, {run.precision}, augment + AdamW train step"
        ),
    }


# ---------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object], n: int) -> float:
    """Seconds for `n` calls of `fn`, queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return time.perf_counter() - start


class SavedBytes:
    """Bytes autograd saves for backward in one step (storages counted once, weights not).

    The CPU stand-in for activation memory: what gradient checkpointing trades for compute.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude, self.seen, self.current, self.peak = exclude, set(), 0, 0

    def new_step(self) -> None:
        self.seen, self.current = set(), 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and ptr not in self.seen:
            self.seen.add(ptr)
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def resident_bytes(modules: list[torch.nn.Module], optimizer) -> int:
    """Parameters, buffers, gradients and optimizer state held between steps."""
    tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    tensors += [t.grad for t in tensors if getattr(t, "grad", None) is not None]
    if optimizer is not None:
        tensors += [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def peak_memory(
    device: torch.device, modules: list[torch.nn.Module], optimizer=None
) -> Iterator[dict]:
    """Peak memory of the block in bytes (`out["bytes"]`); `out["step"]` wraps a step.

    CUDA: `torch.cuda.max_memory_allocated` since the block began (everything on the GPU).
    CPU: parameters, gradients and optimizer state plus the largest one-step total of
    tensors saved for backward; a stand-in so that tiny mode fills the same rows.
    """
    out: dict = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        out["step"] = lambda fn: fn
        yield out
        synchronize(device)
        out["bytes"] = torch.cuda.max_memory_allocated(device)
        return
    saved = SavedBytes({p.untyped_storage().data_ptr() for m in modules for p in m.parameters()})

    def step(fn: Callable[[], object]) -> Callable[[], object]:
        def wrapped():
            saved.new_step()
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                return fn()

        return wrapped

    out["step"] = step
    yield out
    out["bytes"] = resident_bytes(modules, optimizer) + saved.peak


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ fine-tune


@dataclass
class TrainData:
    """What each loop draws its batches from: pixels and token ids, and cxraug's caches."""

    pixels: torch.Tensor  # (N, 3, res, res) in [-1, 1], on the device
    input_ids: torch.Tensor  # (N, 77), CPU
    posteriors: torch.Tensor  # (N, 8, res/8, res/8) cached autoencoder posteriors, CPU
    text_cache: torch.Tensor  # (N, 77, hidden) cached report embeddings, CPU


def prepare_train_data(run: Run, models: Models) -> TrainData:
    """Random images and report-like prompts, and the caches cxraug fills once per run."""
    s, device = run.settings, run.device
    n = 2 * s.batch_size
    gen = torch.Generator().manual_seed(s.seed)
    pixels = (torch.rand(n, 3, s.resolution, s.resolution, generator=gen) * 2 - 1).to(device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    input_ids, _ = tokenize_prompts(models.tokenizer, prompts)
    models.vae.requires_grad_(False).eval()
    models.text_encoder.requires_grad_(False).eval()

    def fill() -> tuple[torch.Tensor, torch.Tensor]:
        # fp32 encoders, batch by batch, as `augmentor.finetune` fills its caches.
        chunks = [pixels[i : i + s.batch_size] for i in range(0, n, s.batch_size)]
        posteriors = torch.cat([encode_posterior(models.vae, c) for c in chunks])
        text = encode_prompts(models.text_encoder, input_ids, s.batch_size)
        return posteriors.cpu(), text.cpu()

    fill()  # warm-up
    seconds = timed(device, fill, 1)
    posteriors, text_cache = fill()
    run.add(
        f"finetune/{models.name}/cache-fill",
        "cache fill (posterior + text), once per run",
        n / seconds,
        "images/s",
        "fp32 encoders; not part of a step",
    )
    return TrainData(pixels, input_ids, posteriors, text_cache)


class TrainLoops:
    """cxraug's fine-tune step and diffusers' `train_text_to_image.py` step on one model."""

    def __init__(self, run: Run, models: Models, data: TrainData, train_text_encoder: bool):
        self.run, self.models, self.data = run, models, data
        self.train_te = train_text_encoder
        unet, te = models.unet, models.text_encoder
        # diffusers warns per cast about modules kept in fp32 (there are none here).
        with _quiet_diffusers():
            unet.to(torch.float32).requires_grad_(True).train()
            # diffusers casts frozen models to the weight dtype; trained ones stay fp32.
            te.to(torch.float32 if train_text_encoder else run.dtype)
            models.vae.to(run.dtype)
        te.requires_grad_(train_text_encoder).train(train_text_encoder)
        self.trained = [unet, te] if train_text_encoder else [unet]
        self.params = [p for m in self.trained for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5, weight_decay=1e-2)
        self.gen = torch.Generator(device=run.device).manual_seed(run.settings.seed)
        self.order = torch.Generator().manual_seed(run.settings.seed)
        self.scaling = float(models.vae.config.scaling_factor)

    def _indices(self) -> torch.Tensor:
        n = len(self.data.input_ids)
        return torch.randperm(n, generator=self.order)[: self.run.settings.batch_size]

    def _update(self, loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def cxraug_step(self) -> None:
        """`augmentor.finetune`'s step: a fresh draw from the cached posterior, cached text."""
        idx, device, m = self._indices(), self.run.device, self.models
        latents = sample_latents(self.data.posteriors[idx].to(device), self.scaling, self.gen)
        with self.run.autocast:
            if self.train_te:
                hidden = m.text_encoder(self.data.input_ids[idx].to(device), return_dict=False)[0]
            else:
                hidden = self.data.text_cache[idx].to(device)
            loss = diffusion_loss(m.unet, m.noise_scheduler, latents, hidden, self.gen)
        self._update(loss)

    def diffusers_step(self) -> None:
        """diffusers' `train_text_to_image.py` step: encode images and reports every step."""
        idx, device, m = self._indices(), self.run.device, self.models
        pixels = self.data.pixels[idx].to(self.run.dtype)
        latents = m.vae.encode(pixels).latent_dist.sample() * self.scaling
        noise = torch.randn_like(latents)
        steps = m.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (len(idx),), device=device).long()
        noisy = m.noise_scheduler.add_noise(latents, noise, timesteps)
        ids = self.data.input_ids[idx].to(device)
        with self.run.autocast:  # accelerate runs prepared (trained) models in autocast
            with torch.set_grad_enabled(self.train_te):
                hidden = m.text_encoder(ids, return_dict=False)[0]
            pred = m.unet(noisy, timesteps, hidden, return_dict=False)[0]
        self._update(F.mse_loss(pred.float(), noise.float(), reduction="mean"))

    def set_checkpointing(self, on: bool) -> None:
        unet, te = self.models.unet, self.models.text_encoder
        if on:
            unet.enable_gradient_checkpointing()
            if self.train_te:
                te.gradient_checkpointing_enable()
        else:
            unet.disable_gradient_checkpointing()
            if self.train_te:
                te.gradient_checkpointing_disable()

    def measure(self, block: str, step: Callable[[], None]) -> tuple[float, float, str]:
        """(images/s, peak bytes, note) of `step` after warm-up, within the block's budget."""
        s, device = self.run.settings, self.run.device
        for _ in range(max(0, s.warmup - 1)):
            step()
        per_step = timed(device, step, 1)  # the last warm-up step, timed for the budget
        n, note = self.run.budget.iterations(block, s.steps, per_step)
        modules = [self.models.unet, self.models.vae, self.models.text_encoder]
        with peak_memory(device, modules, self.optimizer) as mem:
            seconds = timed(device, mem["step"](step), n)
        return n * s.batch_size / seconds, mem["bytes"], note

    def close(self) -> None:
        self.set_checkpointing(False)
        self.optimizer.zero_grad(set_to_none=True)
        del self.optimizer
        free_memory(self.run.device)


def bench_finetune(run: Run, models: Models) -> None:
    """Per model: cache fill, then UNet only and UNet + text encoder, each loop and with
    gradient checkpointing."""
    data = prepare_train_data(run, models)
    for train_te in (False, True):
        part = "unet+te" if train_te else "unet"
        what = "UNet + text encoder" if train_te else "UNet only"
        key = f"{models.name}/{part}"
        loops = TrainLoops(run, models, data, train_te)
        cx = loops.measure(f"finetune/{key}/cxraug", loops.cxraug_step)
        ref = loops.measure(f"finetune/{key}/diffusers", loops.diffusers_step)
        loops.set_checkpointing(True)
        ckpt = loops.measure(f"finetune/{key}/cxraug-ckpt", loops.cxraug_step)
        loops.close()
        run.add(f"finetune/{key}/cxraug", f"{what}: cxraug", cx[0], "images/s", cx[2])
        run.add(f"finetune/{key}/diffusers", f"{what}: diffusers loop", ref[0], "images/s", ref[2])
        run.add(f"finetune/{key}/ratio", f"{what}: cxraug / diffusers loop", cx[0] / ref[0], "x")
        ckpt_what = f"{what}: cxraug, gradient checkpointing"
        run.add(f"finetune/{key}/cxraug-ckpt", ckpt_what, ckpt[0], "images/s", ckpt[2])
        run.add(f"memory/{key}/cxraug", f"{what}: cxraug", cx[1] / GIB, "GiB")
        run.add(f"memory/{key}/diffusers", f"{what}: diffusers loop", ref[1] / GIB, "GiB")
        run.add(f"memory/{key}/cxraug-ckpt", ckpt_what, ckpt[1] / GIB, "GiB")
    del data
    free_memory(run.device)


# ------------------------------------------------------------------------------- sampling


def sampling_pipeline(run: Run, models: Models):
    """A StableDiffusionPipeline of the components: PNDM, SDPA attention, sampling dtype."""
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    for m in (models.unet, models.vae, models.text_encoder):
        m.requires_grad_(False).eval()
    pipe = StableDiffusionPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        unet=models.unet,
        scheduler=models.sample_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # diffusers warns per cast about modules kept in fp32 (there are none here).
    with _quiet_diffusers():
        pipe.to(run.device, run.dtype)
    # diffusers' default under torch 2; set explicitly so the rows say what they measure.
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unet_calls_per_image(steps: int, guidance_scale: float) -> int:
    """UNet evaluations per image with the bases' PNDM sampler: its timesteps (steps + 1
    for PLMS in diffusers), twice with classifier-free guidance."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps) * (2 if guidance_scale > 1 else 1)


def time_sampling(run: Run, pipe, block: str, batch: int) -> tuple[float, str]:
    """Seconds per image of `generate_images` at the run's steps, after a 2-step warm-up."""
    s = run.settings
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    seeds = list(range(batch))
    warm_steps = min(2, s.sample_steps)

    def call(steps: int) -> Callable[[], object]:
        return lambda: generate_images(pipe, prompts, seeds, steps, s.guidance_scale)

    warm = timed(run.device, call(warm_steps), 1)
    full, short = (unet_calls_per_image(k, s.guidance_scale) for k in (s.sample_steps, warm_steps))
    estimate = warm * full / short  # text encoding and decoding scaled up too: generous
    n, note = run.budget.iterations(block, s.sample_repeats, estimate)
    return timed(run.device, call(s.sample_steps), n) / (n * batch), note


def bench_sampling(run: Run, models: Models):
    """Batch 8 without and with channels-last, then every batch size; returns the pipeline."""
    pipe = sampling_pipeline(run, models)
    key = f"sample/{models.name}"
    per_image, note = time_sampling(run, pipe, f"{key}/b8-contiguous", 8)
    run.add(f"{key}/b8-contiguous", "batch 8, contiguous UNet", per_image, "s/image", note)
    pipe.unet.to(memory_format=torch.channels_last)
    for batch in run.settings.sample_batches:
        per_image, note = time_sampling(run, pipe, f"{key}/b{batch}", batch)
        run.add(f"{key}/b{batch}", f"batch {batch}, channels-last UNet", per_image, "s/image", note)
    return pipe


def bench_compiled(run: Run, pipe, name: str) -> None:
    """The batch-8 channels-last row with `torch.compile(unet)`: compile time, then speed.

    Runs last, in the time `--compile-reserve-s` held back; skipped when under half of
    that is left (never with no reserve, as in tiny mode); a failure to compile becomes
    the row's note, not the run's end.
    """
    s = run.settings
    key = f"sample/{name}/b8-compile"
    setting = f"batch 8, channels-last UNet, torch.compile({s.compile_mode}, {s.compile_backend})"
    left = run.budget.left()
    if s.compile_reserve_s and left < s.compile_reserve_s / 2:
        run.add(key, setting, None, "s/image", f"skipped: {left:.0f} s of the budget left")
        return
    eager = pipe.unet
    run.budget.release_reserve(key)
    try:
        pipe.unet = torch.compile(eager, mode=s.compile_mode, backend=s.compile_backend)
        start = time.perf_counter()
        per_image, note = time_sampling(run, pipe, key, 8)
        note = _join(f"compile + warm-up + timed calls {time.perf_counter() - start:.0f} s", note)
        run.add(key, setting, per_image, "s/image", note)
    except Exception as exc:  # the rows measured so far are worth keeping
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        run.add(key, setting, None, "s/image", f"failed: {type(exc).__name__}: {first}")
    finally:
        pipe.unet = eager


# ----------------------------------------------------------------------------- classifier


def bench_classifier(run: Run) -> None:
    """densenet121 train steps as `classifier.train` takes them, on uint8 batches on device."""
    from timm.optim import create_optimizer_v2

    s, device = run.settings, run.device
    torch.manual_seed(s.seed)
    model = build_model(CLASSIFIER, CLASSIFIER_LABELS).to(device).train()
    mean, std = model_normalization(model)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=3e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(s.seed)
    shape = (s.classifier_batch, 1, s.classifier_size, s.classifier_size)
    images = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(device)
    target = torch.randint(0, 2, (s.classifier_batch, CLASSIFIER_LABELS), generator=gen)
    target = target.float().to(device)
    mask = torch.ones_like(target)
    augment = AugmentConfig()

    def step() -> None:
        x = normalize(augment_batch(images, augment, gen), mean, std)
        with run.autocast:
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
        ((loss * mask).sum() / mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(max(0, s.warmup - 1)):
        step()
    per_step = timed(device, step, 1)
    key = f"{CLASSIFIER}/train"
    n, note = run.budget.iterations(f"classifier/{key}", 4 * s.steps, per_step)
    with peak_memory(device, [model], optimizer) as mem:
        seconds = timed(device, mem["step"](step), n)
    run.add(f"classifier/{key}", "train step", n * s.classifier_batch / seconds, "images/s", note)
    run.add(f"memory/{key}", "classifier train step", mem["bytes"] / GIB, "GiB")
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------- table


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2e}"


def format_table(rows: list[Row], section_captions: dict[str, str]) -> str:
    """Section captions, then the rows by section (in measured order) as aligned columns."""
    lines = [f"{name}: {text}" for name, text in section_captions.items()]
    order = list(SECTIONS.values())
    rows = sorted(rows, key=lambda r: order.index(r.section))  # stable: measured order kept
    headers = ("section", "model", "setting", "value", "unit", "note")
    cells = [(r.section, r.model, r.setting, _format_value(r.value), r.unit, r.note) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines += ["", "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for c in cells:
        padded = [c[i].rjust(widths[i]) if i == 3 else c[i].ljust(widths[i]) for i in range(6)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    import diffusers
    import timm
    import transformers

    env = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


# ----------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> tuple[Settings, Path | None]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU, tiny configs: a check of the code")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--resolution", type=int, help="px (default 512; tiny 64)")
    p.add_argument("--batch-size", type=int, help="fine-tune batch (default 8; tiny 2)")
    p.add_argument("--warmup", type=int, help="warm-up steps per block (default 3; tiny 1)")
    p.add_argument("--steps", type=int, help="timed fine-tune steps per block (default 10; tiny 2)")
    p.add_argument("--sample-steps", type=int, help="sampler steps (default 75; tiny 3)")
    p.add_argument("--sample-batches", default="1,8,32", help="sampling batch sizes")
    p.add_argument("--sample-repeats", type=int, help="timed calls per batch (default 2; tiny 1)")
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--classifier-size", type=int, help="px (default 224; tiny 64)")
    p.add_argument("--classifier-batch", type=int, help="default 64; tiny 4")
    p.add_argument("--compile", action="store_true", help="add a torch.compile(unet) row, last")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument(
        "--compile-reserve-s", type=float, help="held back for --compile (default 150; tiny 0)"
    )
    p.add_argument("--budget-s", type=float, help="wall-clock budget, s (default 420; tiny 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    a = p.parse_args(argv)
    models = tuple(m.strip() for m in a.models.split(",") if m.strip())
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        p.error(f"--models: unknown {', '.join(unknown) or 'empty'}; valid: {', '.join(MODELS)}")
    try:
        batches = tuple(int(b) for b in a.sample_batches.split(",") if b.strip())
    except ValueError:
        p.error(f"--sample-batches: {a.sample_batches!r}; give integers, e.g. 1,8,32")

    def pick(value, gpu, tiny):
        return value if value is not None else (tiny if a.tiny else gpu)

    settings = Settings(
        tiny=a.tiny,
        models=models,
        resolution=pick(a.resolution, 512, 64),
        batch_size=pick(a.batch_size, 8, 2),
        warmup=pick(a.warmup, 3, 1),
        steps=pick(a.steps, 10, 2),
        sample_steps=pick(a.sample_steps, 75, 3),
        sample_batches=batches,
        sample_repeats=pick(a.sample_repeats, 2, 1),
        guidance_scale=a.guidance_scale,
        classifier_size=pick(a.classifier_size, 224, 64),
        classifier_batch=pick(a.classifier_batch, 64, 4),
        compile=a.compile,
        compile_mode=a.compile_mode,
        compile_backend=a.compile_backend,
        compile_reserve_s=pick(a.compile_reserve_s, 150.0, 0.0) if a.compile else 0.0,
        budget_s=pick(a.budget_s, 420.0, 50.0),
        seed=a.seed,
        threads=a.threads,
    )
    positive = ("resolution", "batch_size", "warmup", "steps", "sample_steps", "sample_repeats")
    for name in (*positive, "classifier_size", "classifier_batch"):
        if getattr(settings, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be 1 or more")
    if not batches or min(batches) < 1:
        p.error(f"--sample-batches: {a.sample_batches!r}; give sizes of 1 or more")
    if settings.resolution % 64:
        p.error(f"--resolution: {settings.resolution}; must be a multiple of 64")
    return settings, a.out


def main(argv: list[str] | None = None) -> dict:
    """Run the check, print the table; return what `--out` holds (settings, rows, timings)."""
    settings, out = parse_args(argv)
    if not settings.tiny and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check: no CUDA device here; run it on a GPU machine, or pass --tiny for the "
            "CPU check of its code paths"
        )
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device("cpu" if settings.tiny else "cuda")
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise SystemExit("gpu_check: this GPU has no bf16, which the check measures")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    budget = Budget(settings.budget_s, block_weights(settings), settings.compile_reserve_s)
    dtype = torch.float32 if settings.tiny else torch.bfloat16
    run = Run(settings, device, dtype, budget, out, environment(device))
    print(
        f"gpu_check on {run.environment.get('gpu', 'CPU')}: torch {run.environment['torch']}, "
        f"diffusers {run.environment['diffusers']}, budget {settings.budget_s:g} s"
        + (f"  ({TINY_NOTE})" if settings.tiny else ""),
        flush=True,
    )
    tokenizer = tiny_tokenizer()
    compile_pipe = None
    for name in settings.models:
        with run.section(f"{name} build"):
            models = build_models(name, settings.tiny, tokenizer, device, settings.seed)
        print(f"{MODEL_TITLES[name]}: {models.parameters_count() / 1e6:.1f} M parameters")
        with run.section(f"{name} fine-tune"):
            bench_finetune(run, models)
        with run.section(f"{name} sampling"):
            pipe = bench_sampling(run, models)
        if settings.compile and compile_pipe is None:
            compile_pipe = pipe  # kept (sampling dtype) for the compile row at the end
        del models, pipe
        free_memory(device)
    with run.section("classifier"):
        bench_classifier(run)
    if compile_pipe is not None:
        with run.section(f"{settings.models[0]} compile"):
            bench_compiled(run, compile_pipe, settings.models[0])
    print()
    print(format_table(run.rows, captions(run)))
    times = ", ".join(f"{k} {v:.0f} s" for k, v in run.section_seconds.items())
    tail = f"  ({TINY_NOTE})" if settings.tiny else ""
    print(f"\ntotal {run.budget.elapsed():.0f} s of {settings.budget_s:g} s: {times}{tail}")
    run.save(complete=True)
    return run.result(complete=True)


if __name__ == "__main__":
    main()
