"""Where does the side detector miss? Per lobe, on real held-out and on synthetic images.

    python benchmarks/side_misses.py --synthetic S/manifest.parquet --real M/manifest.parquet
        --oracle RUN [--label Consolidation] [--cache DIR]

`evaluate-generator`'s side hit rate counts the synthetic images, prompted with a side, whose
side the detector (`augmentor.laterality.fit_side_detector`: the oracle on each
half-mirrored image) finds. This script splits that rate by the lobe or location the report
names (the first 'left/right upper/middle/lower lobe' or 'lingula' in it), for the real
held-out images with a known side and for the synthetic ones, and lists each synthetic miss
with the prompt's side and the oracle's probability on the half-mirror of the image's left
half and of its right half (a radiograph shows the patient's right on the image's left).
A miss with both probabilities high is an image that shows the finding on both sides; one
with the wrong half high draws it on the other side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmentor.features import HalfMirrorEmbedder, embed_subset, image_hashes, load_run_extractor
from augmentor.laterality import fit_side_detector, prompt_sides
from augmentor.report_text import named_lobe
from manifests.io import read_manifest


def location(text: str | None) -> str:
    """The first lobe a report names (`augmentor.report_text.named_lobe`); '(none named)'."""
    return named_lobe(text) or "(none named)"


def by_location(names: list[str], hits: np.ndarray) -> pd.DataFrame:
    """Per location: images, side found, side missed."""
    frame = pd.DataFrame({"location": names, "found": hits})
    table = frame.groupby("location")["found"].agg(n="size", found="sum")
    table["missed"] = table["n"] - table["found"]
    return table.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--oracle", type=Path, required=True, help="classifier run")
    parser.add_argument("--label", default="Consolidation")
    parser.add_argument("--cache", type=Path, default=None, help="feature cache folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    extractor = load_run_extractor(args.oracle)
    labels = tuple(extractor.labels)
    syn, real = read_manifest(args.synthetic), read_manifest(args.real)
    cache = args.cache or args.synthetic.parent / ".feature_cache"
    halves = HalfMirrorEmbedder(extractor)
    syn_mask = (syn.rows["target_label"] == args.label).to_numpy()
    real_mask = real.rows[args.label].to_numpy() == 1
    h_syn = embed_subset(syn, image_hashes(syn), syn_mask, halves, cache)
    h_real = embed_subset(real, image_hashes(real), real_mask, halves, cache)
    detector = fit_side_detector(real, h_real, args.label, labels)
    if detector is None:
        raise SystemExit(f"{args.label}: fewer than 2 left and 2 right real train cases")

    held = detector.held
    real_hits = detector.predict_left(h_real, held) == (detector.sides[held] == "left")
    real_names = [location(real.rows["report"].iloc[i]) for i in held]
    stated = prompt_sides(syn, args.label)
    sided = np.flatnonzero(syn_mask & np.isin(stated, ["left", "right"]))
    syn_hits = detector.predict_left(h_syn, sided) == (stated[sided] == "left")
    syn_names = [location(syn.rows["prompt"].iloc[i]) for i in sided]

    print(f"{args.label}: side found on real held-out images, by the location the report names")
    print(by_location(real_names, real_hits).to_string(index=False))
    print(f"{args.label}: side found on synthetic images, by the location the prompt names")
    print(by_location(syn_names, syn_hits).to_string(index=False))
    misses = sided[~syn_hits]
    j = detector.j
    print(
        pd.DataFrame(
            {
                "prompt side": stated[misses],
                "location": [syn_names[k] for k in np.flatnonzero(~syn_hits)],
                "p(image-left half)": h_syn["probs_image_left"][misses, j].round(2),
                "p(image-right half)": h_syn["probs_image_right"][misses, j].round(2),
            }
        ).to_string(index=False)
    )
    print(
        f"side hit rate: real held-out {real_hits.mean():.3f} ({len(held)}), "
        f"synthetic {syn_hits.mean():.3f} ({len(sided)})"
    )


if __name__ == "__main__":
    main()
