"""Draw a captioned sample grid of phantom studies (docs/phantom_grid.png).

    python benchmarks/make_phantom_grid.py [--out docs/phantom_grid.png] [--size 128] [--seed 0]

The grid's first row shows who the patients are: normal studies of a young and an old woman
and man (breast shadows, heart size, aortic knob, bone density change with sex and age).
Then normal studies and examples of every finding (each side and severity the generator
draws). Each image has a short caption: sex and age, then finding, patient side, severity;
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
# The first row: normal PA studies of (sex, youngest age, oldest age).
PEOPLE = [("F", 20, 40), ("F", 70, 90), ("M", 20, 40), ("M", 70, 90)]
# Then, in order: (finding, side, severity) or None for a normal study.
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
    who = f"{study.patient.sex}{int(study.age)} "
    return who + (", ".join(parts) if parts else f"normal {study.view}")


def pick_studies(seed: int = 0, pool: int = 3000) -> list[Study]:
    """One study per PEOPLE entry, then per WANTED entry (preferring studies with that
    finding alone)."""
    studies = phantom_studies(pool, seed=seed)
    chosen: list[Study] = []
    for sex, young, old in PEOPLE:
        chosen.append(
            next(
                s
                for s in studies
                if not s.findings
                and s.view == "PA"
                and s.patient.sex == sex
                and young <= s.age < old
                and s.patient.patient_id not in {c.patient.patient_id for c in chosen}
            )
        )
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
