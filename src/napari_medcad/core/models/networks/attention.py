"""Attention models whose attention weights are their explanation.

* ``attention2d``: a CNN stem turns a 2-D image into a grid of tokens (one per 4 x 4 pixels),
  a class token joins them, and MONAI ``TransformerBlock`` s (self-attention, ``save_attn``) mix
  them; the class token's output gives the logits.  ``forward(x, return_attention=True)`` also
  returns the class token's attention over the grid tokens in the last block (mean over heads),
  shaped (B, H/4, W/4): the weights the model used to form the image-level answer.
* ``attention_mil3d``: attention-based multiple-instance learning (Ilse, Tomczak & Welling,
  ICML 2018, gated attention).  Every slice of a (B, 1, D, H, W) volume goes through the
  :class:`SliceEncoder`; each cell of its (H/4, W/4) feature grid is an instance (a patch of the
  slice seen through the CNN's receptive field).  Gated attention
  ``a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k)))`` pools the instances into one bag
  embedding, which a linear layer turns into scan logits.  ``return_attention=True`` also returns
  the weights ``a`` shaped (B, D, H/4, W/4); they sum to 1 over the volume.

MONAI's ``MILModel`` was not used for the second: its attention is not gated, it does not
return the weights, and it expects a fixed bag of 2-D instance images rather than a volume.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register
from .classifiers import SliceEncoder


class AttentionNet2D(nn.Module):
    def __init__(self, in_channels: int = 1, input_size: int = 64, features=(16, 32, 64), num_layers: int = 2,
                 num_heads: int = 4, mlp_dim: int = 128, num_classes: int = 2, dropout: float = 0.1,
                 norm: str | None = "batch"):
        super().__init__()
        from monai.networks.blocks import TransformerBlock

        self.stem = SliceEncoder(in_channels, features, norm)
        width = self.stem.out_channels
        self.grid = int(input_size) // 4
        self.input_size = int(input_size)
        self.position = nn.Parameter(torch.zeros(1, self.grid * self.grid, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, int(mlp_dim), int(num_heads), dropout, qkv_bias=True, save_attn=True)
            for _ in range(int(num_layers))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, int(num_classes))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"attention2d takes {self.input_size} x {self.input_size} images, got {tuple(x.shape[-2:])}")
        maps = self.stem(x)  # (B, C, g, g)
        batch, width, rows, cols = maps.shape
        tokens = maps.flatten(2).transpose(1, 2) + self.position
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        # the last block's attention matrix as it enters the block's attention dropout: the same
        # numbers MONAI keeps in ``att_mat``, but inside the graph (``att_mat`` is detached), so
        # training can shape it (training.localisation)
        captured: list[torch.Tensor] = []
        hook = (self.blocks[-1].attn.drop_weights.register_forward_hook(
            lambda module, inputs, output: captured.append(inputs[0])) if return_attention else None)
        try:
            for block in self.blocks:
                tokens = block(tokens)
        finally:
            if hook is not None:
                hook.remove()
        logits = self.head(self.norm(tokens[:, 0]))
        if not return_attention:
            return logits
        weights = captured[-1]  # (B, heads, 1 + g*g, 1 + g*g), softmax over the last axis
        attention = weights[:, :, 0, 1:].mean(dim=1).reshape(batch, rows, cols)
        return logits, attention


class GatedAttentionMIL3D(nn.Module):
    def __init__(self, in_channels: int = 1, features=(16, 32, 64), attention_dim: int = 32, num_classes: int = 2,
                 dropout: float = 0.1, norm: str | None = "batch"):
        super().__init__()
        self.encoder = SliceEncoder(in_channels, features, norm)
        width = self.encoder.out_channels
        self.attention_v = nn.Linear(width, int(attention_dim))
        self.attention_u = nn.Linear(width, int(attention_dim))
        self.attention_w = nn.Linear(int(attention_dim), 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, int(num_classes))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, H, W) -> instance embeddings (B, D, H/4, W/4, C)."""
        batch, channels, depth, height, width = x.shape
        slices = x.permute(0, 2, 1, 3, 4).reshape(batch * depth, channels, height, width)
        maps = self.encoder(slices)  # (B*D, C, h, w)
        _, features, rows, cols = maps.shape
        return maps.reshape(batch, depth, features, rows, cols).permute(0, 1, 3, 4, 2)

    def pool(self, instances: torch.Tensor, return_attention: bool = False):
        """Gated attention pooling of (B, D, h, w, C) instance embeddings -> logits (and weights)."""
        batch, depth, rows, cols, features = instances.shape
        flat = instances.reshape(batch, -1, features)
        gate = torch.tanh(self.attention_v(flat)) * torch.sigmoid(self.attention_u(flat))
        attention = torch.softmax(self.attention_w(gate).squeeze(-1), dim=1)  # (B, K)
        bag = torch.einsum("bk,bkc->bc", attention, flat)
        logits = self.head(self.dropout(bag))
        if not return_attention:
            return logits
        return logits, attention.reshape(batch, depth, rows, cols)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        return self.pool(self.encode(x), return_attention)


@register("attention2d")
def attention2d(**params) -> AttentionNet2D:
    return AttentionNet2D(**params)


@register("attention_mil3d")
def attention_mil3d(**params) -> GatedAttentionMIL3D:
    return GatedAttentionMIL3D(**params)
