"""The `--labels LABEL:COUNT,...` flag of synthesize, checked without heavy imports.

Only the syntax, the counts and the cap are checked here (so a typo answers before torch
loads); label names resolve against a manifest's label set in `augmentor.prompts`.
"""

from __future__ import annotations

import re

from manifests.errors import UserError

# A documented cap on one synthesis run: beyond it the plan alone would not fit in memory
# (RoentGen's largest augmentation sets are far below: tens of thousands of images).
MAX_IMAGES_PER_RUN = 10_000_000

_LABEL_SPEC = re.compile(r"^\s*([^:,]*[^:,\s])\s*:\s*([+-]?\d+)\s*$")


def split_label_counts(
    spec: str, negatives: int = 0, flag: str = "--labels"
) -> list[tuple[str, int]]:
    """`pneumothorax:50,pleural_effusion:50` as [(name, count)], names as given.

    A malformed item, a count <= 0, or more than MAX_IMAGES_PER_RUN images in all (with
    `negatives`) is a UserError.
    """
    if not spec or not spec.strip():
        raise UserError(
            f"{flag}: empty; expected LABEL:COUNT[,LABEL:COUNT...], e.g. pneumothorax:50"
        )
    items = []
    for item in spec.split(","):
        match = _LABEL_SPEC.match(item)
        if not match:
            raise UserError(
                f"{flag}: {item.strip()!r} is not LABEL:COUNT (e.g. pneumothorax:50,pleural_effusion:50)"
            )
        name, count = match.group(1), int(match.group(2))
        if count <= 0:
            raise UserError(f"{flag}: count for {name!r} is {count}; it must be a positive integer")
        items.append((name, count))
    total = sum(n for _, n in items) + max(int(negatives), 0)
    if total > MAX_IMAGES_PER_RUN:
        raise UserError(
            f"{flag}: {total:,} images in one run is over the cap of {MAX_IMAGES_PER_RUN:,}; "
            "split the work into several runs (different --seed and --out)"
        )
    return items
