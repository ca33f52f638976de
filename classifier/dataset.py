"""A plain PyTorch `Dataset` over any manifest, for your own training loop.

`ManifestDataset` reads one split of a real, synthetic or mixed manifest (e.g. from
`manifests.mixing.mix_manifests`) and returns, per image, a dict:

* ``image``: float32 ``(1, S, S)`` in [0, 1] (after `transform`, whatever it returns),
* ``target``: float32 ``(L,)`` label targets after the uncertain-label policy,
* ``mask``: float32 ``(L,)``, 1 where the label counts in the loss (0: not mentioned, or
  uncertain under ``ignore``),
* ``index``: the row within the split.

Labels and the uncertain policy are the ones `cxraug train-classifier` uses
(`classifier.data.resolve_labels`, `label_targets`); images are decoded the same way
(`classifier.data.decode_resized`). A masked loss is
``(bce(logits, target, reduction="none") * mask).sum() / mask.sum()``.
See `docs/own_trainer.py` for a complete loop with a plain timm model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from classifier.data import (
    UNCERTAIN_POLICIES,
    check_choice,
    decode_resized,
    label_targets,
    resolve_labels,
)
from manifests.io import Manifest, filter_manifest, read_manifest


class ManifestDataset(torch.utils.data.Dataset):
    """Images of one split of a manifest with label targets and loss mask.

    Args:
        manifest: a `Manifest` or the path of a manifest file.
        split: `train`, `val` or `test` (None: every row).
        labels: label names (any spelling `resolve_label` accepts); default: the labels with
            5+ positives and negatives in train, as train-classifier chooses them.
        uncertain: -1 labels: `ignore` (masked), `zeros` or `ones` (train-classifier's
            `--uncertain`).
        image_size: square side images are resized to (None: keep each image's size).
        transform: called on each ``(1, S, S)`` float tensor in [0, 1] (augmentation,
            normalisation, channel repeat for RGB models, ...).
        source: keep only `real` or `synthetic` rows (None: both).
    """

    def __init__(
        self,
        manifest: Manifest | str | Path,
        split: str | None = "train",
        labels: Sequence[str] | None = None,
        uncertain: str = "ignore",
        image_size: int | None = 224,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        source: str | None = None,
    ) -> None:
        check_choice(uncertain, UNCERTAIN_POLICIES, "uncertain")
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(Path(manifest))
        self.labels = resolve_labels(manifest, labels, uncertain)
        self.manifest = filter_manifest(manifest, split=split, source=source, where="dataset")
        values = self.manifest.rows[list(self.labels)].to_numpy(np.float32)
        targets, mask = label_targets(values, uncertain)
        self.targets = torch.from_numpy(targets)
        self.mask = torch.from_numpy(mask)
        self.paths = self.manifest.image_paths()
        self.image_size = image_size
        self.transform = transform
        self.uncertain = uncertain

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.paths[index]
        if self.image_size is None:
            from manifests.images import load_image

            array = load_image(path)
        else:
            array = decode_resized(path, self.image_size)
        image = torch.tensor(array, dtype=torch.float32).div_(255.0)[None]
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "target": self.targets[index],
            "mask": self.mask[index],
            "index": torch.tensor(index),
        }

    @property
    def rows(self):
        """The manifest rows of this dataset, in sample order (patient, source, report, ...)."""
        return self.manifest.rows


__all__ = ["ManifestDataset"]
