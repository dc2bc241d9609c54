"""Image-level classifiers of the method description: a plain 2-D CNN and an LSTM over slices.

Both return logits of two classes (no finding, finding); the card's output activation is the
softmax.  Inputs are single-channel images in [0, 1] (the card's lung window):

* ``plain_cnn2d``: (B, 1, H, W) with H, W = ``input_size``.  conv 32 -> max pool -> conv 64 ->
  max pool -> conv 128 -> max pool -> dense 256 -> dense 2 (softmax).  The last pool is 4 x 4 so
  the dense layer stays small (128 x 4 x 4 inputs for 64 x 64 images, a 2.5 MB weights file).
* ``slice_lstm``: (B, 1, D, H, W), any D, H, W.  Every slice goes through a small 2-D CNN
  (:class:`SliceEncoder`, globally pooled to one embedding per slice); a bidirectional LSTM reads
  the (layer-normalised) slice embeddings from the first slice to the last and back.  The scan
  logits come from its outputs: ``readout="max"`` takes each output feature's maximum over the
  slices (the slice holding the evidence decides, wherever it lies), ``readout="final"`` the
  final states of both directions (these are most sensitive to the first and last slices, so
  Grad-CAM through them lit the ends of the volume, not the nodule).

Grad-CAM (``core.explain``) targets ``features.act3`` of the CNN and ``encoder.act4`` of the LSTM
(per-slice maps, weighted by the scan score's gradients).
"""

from __future__ import annotations

import torch
from torch import nn

from . import register


def conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]


class PlainCNN2D(nn.Module):
    def __init__(self, in_channels: int = 1, input_size: int = 64, features=(32, 64, 128),
                 pools=(2, 2, 4), dense: int = 256, num_classes: int = 2, dropout: float = 0.3):
        super().__init__()
        if len(features) != 3 or len(pools) != 3:
            raise ValueError("plain_cnn2d has three conv stages (features and pools of length 3)")
        reduction = 1
        for pool in pools:
            reduction *= int(pool)
        if input_size % reduction:
            raise ValueError(f"input_size {input_size} is not a multiple of the pooling {reduction}")
        layers: dict[str, nn.Module] = {}
        channels = in_channels
        for index, (out, pool) in enumerate(zip(features, pools), start=1):
            layers[f"conv{index}"] = nn.Conv2d(channels, int(out), 3, padding=1)
            layers[f"act{index}"] = nn.ReLU()
            layers[f"pool{index}"] = nn.MaxPool2d(int(pool))
            channels = int(out)
        self.input_size = int(input_size)
        self.features = nn.Sequential()
        for name, layer in layers.items():
            self.features.add_module(name, layer)
        side = input_size // reduction
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, int(dense)), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(int(dense), int(num_classes)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"plain_cnn2d takes {self.input_size} x {self.input_size} images, got {tuple(x.shape[-2:])}")
        return self.classifier(self.features(x))


class SliceEncoder(nn.Module):
    """A small 2-D CNN: (N, C, H, W) -> feature map (N, features[-1], H/4, W/4).

    With ``norm="batch"`` every convolution is followed by batch normalisation (much faster
    training from scratch; in eval mode it is a fixed affine map with the learned statistics).
    """

    def __init__(self, in_channels: int = 1, features=(16, 32, 64), norm: str | None = "batch"):
        super().__init__()
        if norm not in (None, "batch"):
            raise ValueError(f"norm must be 'batch' or None, not {norm!r}")
        a, b, c = (int(f) for f in features)

        def normalise(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()

        self.conv1, self.norm1, self.act1 = nn.Conv2d(in_channels, a, 3, padding=1), normalise(a), nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2, self.norm2, self.act2 = nn.Conv2d(a, b, 3, padding=1), normalise(b), nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3, self.norm3, self.act3 = nn.Conv2d(b, c, 3, padding=1), normalise(c), nn.ReLU()
        self.conv4, self.norm4, self.act4 = nn.Conv2d(c, c, 3, padding=1), normalise(c), nn.ReLU()
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.norm1(self.conv1(x))))
        x = self.pool2(self.act2(self.norm2(self.conv2(x))))
        x = self.act3(self.norm3(self.conv3(x)))
        return self.act4(self.norm4(self.conv4(x)))


class SliceLSTM(nn.Module):
    def __init__(self, in_channels: int = 1, features=(16, 32, 64), hidden: int = 32, num_classes: int = 2,
                 norm: str | None = "batch", readout: str = "final"):
        super().__init__()
        if readout not in ("final", "max"):
            raise ValueError(f"readout must be 'final' or 'max', not {readout!r}")
        self.readout = readout
        self.encoder = SliceEncoder(in_channels, features, norm)
        width = self.encoder.out_channels
        self.norm = nn.LayerNorm(2 * width)  # slice embeddings of a frozen encoder vary widely in scale
        self.lstm = nn.LSTM(2 * width, int(hidden), batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * int(hidden), int(num_classes))

    def encode_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> the encoder's map of every slice (B, D, features[-1], H/4, W/4)."""
        batch, channels, depth, height, width = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(batch * depth, channels, height, width)
        maps = self.encoder(slices)
        return maps.reshape(batch, depth, *maps.shape[1:])

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """Slice maps (B, D, C, h, w) -> slice embeddings (B, D, 2C): their means and maxima."""
        return torch.cat([maps.mean(dim=(3, 4)), maps.amax(dim=(3, 4))], dim=2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> slice embeddings (B, D, 2 * features[-1]): mean- and max-pooled maps."""
        return self.embed(self.encode_maps(x))

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The LSTM over the slice embeddings (first slice to last and back) -> logits."""
        outputs, (hidden, _) = self.lstm(self.norm(embeddings))
        if self.readout == "max":
            return self.head(outputs.amax(dim=1))
        return self.head(torch.cat([hidden[0], hidden[1]], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.encode(x))


@register("plain_cnn2d")
def plain_cnn2d(**params) -> PlainCNN2D:
    return PlainCNN2D(**params)


@register("slice_lstm")
def slice_lstm(**params) -> SliceLSTM:
    return SliceLSTM(**params)
