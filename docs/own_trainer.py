"""Your own training loop on a cxraug mixed manifest: the README example, kept runnable.

    python docs/own_trainer.py REAL_MANIFEST SYNTHETIC_MANIFEST

`tests/test_dataset.py` runs `main` on the test fixtures, so the README snippet (the body
of `main` between the markers, one epoch) cannot rot. Keep the two in sync.
"""

# ruff: noqa: I001  (the snippet keeps its imports in one block, as the README shows them)
from __future__ import annotations

import sys


def main(real_path, synthetic_path, backbone="resnet18", image_size=224):
    # --- README snippet start
    import timm
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce
    from classifier.dataset import ManifestDataset
    from manifests import read_manifest
    from manifests.mixing import mix_manifests

    mixed = mix_manifests(read_manifest(real_path), read_manifest(synthetic_path), mix=0.5)
    train = ManifestDataset(mixed, split="train", uncertain="zeros", image_size=image_size)
    model = timm.create_model(backbone, num_classes=len(train.labels), in_chans=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for batch in torch.utils.data.DataLoader(train, batch_size=16, shuffle=True):
        loss = bce(model(batch["image"]), batch["target"], weight=batch["mask"], reduction="sum")
        (loss / batch["mask"].sum().clamp(min=1)).backward()
        optimizer.step(), optimizer.zero_grad()
    # --- README snippet end
    return model, train, float(loss.detach() / batch["mask"].sum().clamp(min=1))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    _, data, last = main(sys.argv[1], sys.argv[2])
    print(f"trained on {len(data)} images ({', '.join(data.labels)}); last loss {last:.4f}")
