"""A tiny, exactly predictable user model for tests of predict, the widget and the adapter.

It is a real model folder as a user would supply one (card.yaml + TorchScript file): the card
windows the image to 0..1 and the network turns voxels above 0.5 into high logits, so every
bright blob (above ``level`` HU) becomes one finding where the blob is.  Only tests import it.

TorchScript runs only when the user trusts the file (core/models/trust.py), so the model is put
on the trust list, which tests/conftest.py points at a scratch file for the session (never a real
user's; subprocesses of the CLI inherit it).
"""

from __future__ import annotations

from pathlib import Path


def trust_for_tests(path: Path, model: str = "test") -> str:
    """Trust a TorchScript file (on the session's scratch trust list); its digest."""
    from napari_medcad.core.models.trust import trust

    return trust(Path(path), model)


def write_bright_blob_model(folder: Path, *, name: str = "bright-blobs", dims: int = 3, level: float = 500.0,
                            width: float = 1000.0, roi_size_zyx=(8, 32, 32), min_diameter_mm: float = 0.0,
                            modality: str = "CT", trusted: bool = True) -> Path:
    """Write the model folder; ``trusted`` also puts its TorchScript file on the trust list."""
    import torch

    from napari_medcad.core.models.card import ModelCard

    class Bright(torch.nn.Module):
        def forward(self, x):
            return (x - 0.5) * 40.0

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Bright()).save(str(folder / "model.ts"))
    roi = list(roi_size_zyx)[-dims:]
    card = ModelCard(
        name=name, task="detection", dims=dims, version="0.0.1", modality=modality, family="cnn",
        format="torchscript", weights="model.ts",
        preprocessing=[{"op": "window", "params": {"preset": "custom", "level": level, "width": width,
                                                    "output": "unit"}}],
        classes=["background", "blob"],
        output={"activation": "sigmoid", "channels": 1},
        decoding={"threshold": 0.5, "min_diameter_mm": min_diameter_mm, "max_findings": 20},
        inference={"roi_size_zyx": roi, "overlap": 0.25, "batch_size": 2},
        license="CC0-1.0",
    )
    if trusted:
        trust_for_tests(folder / "model.ts", name)
    return card.save(folder / "card.yaml")
