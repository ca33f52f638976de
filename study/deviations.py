"""Where a study departs from RoentGen's protocol: the deviation list of its report.

`roentgen_deviations` compares a study's generator and synthesis settings with the
protocol of RoentGen (arXiv 2211.12737) as this study reproduces it (`ROENTGEN_PROTOCOL`),
one line per difference; `deviations_section` renders the list as a report section.
"""

from __future__ import annotations

from html import escape

from study.config import StudyConfig

# RoentGen's protocol (arXiv 2211.12737) as this study reproduces it, for the deviation list.
ROENTGEN_PROTOCOL = {
    "resolution (px)": 512,
    "images per optimizer step": 256,
    "text encoder trained": True,
    "sampler": "pndm",
    "sampling steps": 75,
    "guidance scale": 4.0,
}


def roentgen_deviations(cfg: StudyConfig) -> list[str]:
    """Where this study's settings differ from RoentGen's protocol (each a line for the report)."""
    g, s = cfg.generator.value, cfg.synthesis.value
    resolution = g("resolution") or (
        cfg.data.phantom_size if g("base") == "tiny" and cfg.data.manifest is None else None
    )
    ours = {
        "resolution (px)": resolution or 512,
        "images per optimizer step": g("batch_size") * g("gradient_accumulation_steps"),
        "text encoder trained": g("train_text_encoder"),
        "sampler": s("scheduler"),
        "sampling steps": s("num_inference_steps"),
        "guidance scale": s("guidance_scale"),
    }
    lines = [
        f"{key}: {ours[key]!r} here, {value!r} in RoentGen"
        for key, value in ROENTGEN_PROTOCOL.items()
        if ours[key] != value
    ]
    if g("base") == "tiny":
        lines.insert(0, "base: the miniature `tiny` model trained from scratch on CPU, not "
                     "Stable Diffusion 1.x")  # fmt: skip
        if s("film_grain") and g("film_grain") is not False:
            lines.append(
                "film grain: measured on the train images (what tiny's autoencoder drops) "
                "and added to every synthetic image; RoentGen adds none"
            )
    return lines


def deviations_section(cfg: StudyConfig) -> dict[str, str]:
    """The deviation list as a report section ({'md', 'html'})."""
    lines = roentgen_deviations(cfg)
    title = "Deviations from RoentGen's protocol"
    if not lines:
        text = "None: this study follows RoentGen's fine-tuning and sampling protocol."
        return {"md": f"## {title}\n\n{text}\n", "html": f"<h2>{title}</h2><p>{text}</p>"}
    md = f"## {title}\n\n" + "".join(f"- {line}\n" for line in lines)
    html = (
        f"<h2>{escape(title)}</h2><ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in lines)
        + "</ul>"
    )
    return {"md": md, "html": html}


__all__ = ["ROENTGEN_PROTOCOL", "deviations_section", "roentgen_deviations"]
