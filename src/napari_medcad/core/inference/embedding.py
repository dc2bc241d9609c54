"""The detector's own features at each candidate: "the CNN's embedding" the graph rescorer reads.

The detector runs once more on a small patch of the prepared image centred on each candidate
(``patch_zyx`` voxels of the model's grid); a forward hook takes the output of one of its layers
(``layer``, e.g. BasicUNet's last decoder block ``upcat_1``, whose channels the final 1x1
convolution turns into the nodule logit), and the embedding is that output averaged over the
patch voxels within the candidate's radius.  A patch per candidate, not the blended sliding-window
features: the same numbers whether the candidates come from a fresh run or from a cache, and no
whole-volume feature map in memory.  About 5 ms per candidate on two CPU cores (16 x 24 x 24).

torch is imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..crop import centred_crop
from ..errors import MedcadError
from ..image import MedicalImage


def embedding_names(channels: int) -> tuple[str, ...]:
    """The node-feature names of an embedding's channels."""
    return tuple(f"cnn_embedding_{i}" for i in range(int(channels)))


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which layer of the detector, how many channels it gives, and the patch it sees."""

    layer: str
    channels: int
    patch_zyx: tuple[int, ...]

    @classmethod
    def from_card(cls, inference: dict[str, Any]) -> "EmbeddingSpec | None":
        """The ``cnn_embedding`` entry of a rescorer card's inference section, if it has one."""
        spec = inference.get("cnn_embedding")
        if not spec:
            return None
        try:
            result = cls(str(spec["layer"]), int(spec["channels"]), tuple(int(v) for v in spec["patch_zyx"]))
        except (KeyError, TypeError, ValueError):
            raise MedcadError("the rescorer card's cnn_embedding needs layer, channels and patch_zyx") from None
        if result.channels < 1 or len(result.patch_zyx) != 3 or min(result.patch_zyx) < 1:
            raise MedcadError("the rescorer card's cnn_embedding has no channels or a bad patch size")
        return result

    def names(self) -> tuple[str, ...]:
        return embedding_names(self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "channels": self.channels, "patch_zyx": list(self.patch_zyx)}


def candidate_embeddings(network, prepared: MedicalImage, centres_world_mm: np.ndarray, diameters_mm: Sequence[float],
                         spec: EmbeddingSpec, device: str = "cpu", batch_size: int = 16) -> np.ndarray:
    """(N, spec.channels) float32: the layer's output averaged within each candidate's radius.

    ``prepared`` is the detector's input (its card's preprocessing done, one channel, 3-D);
    ``centres_world_mm`` (N, 3) LPS.  Deterministic for a given network, image and candidate,
    whatever else is in the batch (batch norm runs in eval mode).
    """
    import torch

    from .devices import select_device

    centres_world_mm = np.asarray(centres_world_mm, float).reshape(-1, 3)
    count = len(centres_world_mm)
    if count == 0:
        return np.zeros((0, spec.channels), np.float32)
    volume = np.asarray(prepared.array, np.float32)
    if volume.ndim != 3:
        raise MedcadError("candidate embeddings need a one-channel 3-D image")
    modules = dict(network.named_modules()) if hasattr(network, "named_modules") else {}
    if spec.layer not in modules:
        raise MedcadError(f"the detector has no layer '{spec.layer}' to take the candidates' embedding from")
    size = np.asarray(spec.patch_zyx)
    spacing = np.asarray(prepared.geometry.spacing_zyx, float)
    centres = np.round(prepared.world_to_index(centres_world_mm)).astype(int).reshape(-1, 3)
    diameters = np.asarray(diameters_mm, float).reshape(-1)
    if len(diameters) != count:
        raise MedcadError(f"{len(diameters)} diameters for {count} candidates")
    radii = np.maximum(0.5 * diameters, spacing.max())
    # mm from the patch's centre voxel, the same for every patch
    distance = np.linalg.norm((np.indices(tuple(size)).reshape(3, -1).T - size // 2) * spacing, axis=1)

    captured: list = []
    hook = modules[spec.layer].register_forward_hook(lambda module, inputs, output: captured.append(output))
    torch_device = select_device(device)
    out = np.zeros((count, spec.channels), np.float32)
    try:
        network = network.to(torch_device).eval()
        with torch.inference_mode():
            for first in range(0, count, batch_size):
                rows = range(first, min(count, first + batch_size))
                patches = np.stack([centred_crop(volume, centres[i], size, 0.0) for i in rows])[:, None]
                captured.clear()
                network(torch.from_numpy(patches).to(torch_device))
                if not captured:
                    raise MedcadError(f"the detector's layer '{spec.layer}' gave no output")
                features = captured[-1][0] if isinstance(captured[-1], (tuple, list)) else captured[-1]
                features = features.float().cpu().numpy()
                if features.shape[1] != spec.channels or tuple(features.shape[2:]) != tuple(size):
                    raise MedcadError(f"the detector's layer '{spec.layer}' gives {features.shape[1]} channels on "
                                      f"{tuple(features.shape[2:])}; the rescorer expects {spec.channels} on "
                                      f"{tuple(size)}")
                flat = features.reshape(len(rows), spec.channels, -1)
                for j, i in enumerate(rows):
                    out[i] = flat[j][:, distance <= radii[i]].mean(axis=1)
    finally:
        hook.remove()
    return out
