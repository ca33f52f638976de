"""Draw a captioned sample grid of phantom studies (docs/phantom_grid.png).

    python benchmarks/make_phantom_grid.py [--out docs/phantom_grid.png] [--size 128] [--seed 0]

The grid picks normal studies and examples of every finding (each side and severity the
generator draws), with a short caption under each image: finding, patient side, severity;
'?' marks a hedged (label -1) finding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from manifests.phantom import Study, draw_phantom, phantom_studies

SHORT = {
    "Cardiomegaly": "CM",
    "Pleural Effusion": "Eff",
    "Pneumothorax": "PTX",
    "Consolidation": "Cons",
    "Support Devices": "Dev",
}
ABBREV = {"small": "sm", "moderate": "mod", "large": "lg", "severe": "sev"}
# What the grid shows, in order: (finding, side, severity) or None for a normal study.
WANTED = [
    None,
    None,
    ("Cardiomegaly", None, "moderate"),
    ("Cardiomegaly", None, "severe"),
    ("Pleural Effusion", "right", "small"),
    ("Pleural Effusion", "left", "moderate"),
    ("Pleural Effusion", "both", "large"),
    ("Pleural Effusion", "right", "large"),
    ("Pneumothorax", "left", "small"),
    ("Pneumothorax", "right", "large"),
    ("Pneumothorax", "left", "large"),
    ("Consolidation", "right", "right lower lobe"),
    ("Consolidation", "left", "left upper lobe"),
    ("Consolidation", "right", "right middle lobe"),
    ("Support Devices", None, None),
    ("Support Devices", None, None),
]


def caption(study: Study) -> str:
    parts = []
    for name, info in study.findings.items():
        text = SHORT[name]
        if "side" in info:
            text += " " + {"right": "R", "left": "L", "both": "R+L"}[info["side"]]
        if "lobe" in info:
            text = f"Cons {''.join(w[0] for w in info['lobe'].split()[:2]).upper()}L"
        elif "severity" in info and name != "Consolidation":
            text += " " + ABBREV.get(info["severity"], info["severity"])
        parts.append(text + ("?" if info.get("uncertain") else ""))
    return ", ".join(parts) if parts else f"normal {study.view}"


def pick_studies(seed: int = 0, pool: int = 3000) -> list[Study]:
    """One study per WANTED entry, preferring studies with that finding alone."""
    studies = phantom_studies(pool, seed=seed)
    chosen: list[Study] = []
    for want in WANTED:
        for study in sorted(studies, key=lambda s: len(s.findings)):
            if study in chosen:
                continue
            if want is None:
                ok = not study.findings and study.view == "PA"
            else:
                name, side, severity = want
                info = study.findings.get(name)
                ok = info is not None and not info.get("uncertain", False)
                ok = ok and (side is None or info.get("side") == side)
                ok = ok and (
                    severity is None or severity in (info.get("severity"), info.get("lobe"))
                )
            if ok:
                chosen.append(study)
                break
    return chosen


def phantom_grid(size: int = 128, seed: int = 0, columns: int = 4) -> Image.Image:
    """A captioned grid image of `pick_studies(seed)` drawn at `size` pixels."""
    studies = pick_studies(seed)
    strip = 14
    rows = -(-len(studies) // columns)
    grid = Image.new("L", (columns * size, rows * (size + strip)), color=0)
    draw = ImageDraw.Draw(grid)
    for i, study in enumerate(studies):
        x, y = (i % columns) * size, (i // columns) * (size + strip)
        grid.paste(Image.fromarray(draw_phantom(study, size)), (x, y))
        draw.text((x + 3, y + size + 1), caption(study), fill=255)
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/phantom_grid.png"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    phantom_grid(args.size, args.seed).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
