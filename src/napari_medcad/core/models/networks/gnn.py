"""The candidate-graph rescorer: a small graph attention network (torch_geometric ``TransformerConv``,
multi-head attention over each node's neighbours; unlike ``GATConv``, whose edge attributes only
weight the attention, it also puts them into the messages, so "joined to its neighbour by dense
tissue" reaches the node, not only "how much to listen to it").

Node features are standardised inside the network by buffers (``feature_mean``,
``feature_std``) set at training time, so they travel in the state dict with the weights.
Each attention layer reads the edge attributes (distance, closeness, alignment, dense path) and adds its
output to its input (residual); the head sees the node's own encoding and its neighbourhood's,
so an isolated candidate is judged on its own features and a chain member also by its chain.
Output: one logit per node.
"""

from __future__ import annotations

import torch
from torch import nn

from . import register


class CandidateGraphAttention(nn.Module):
    def __init__(self, in_features: int, hidden: int = 32, edge_features: int = 4, heads: int = 2,
                 layers: int = 2, dropout: float = 0.1):
        from ...graph.pyg import load

        TransformerConv = load().nn.TransformerConv

        super().__init__()
        if int(in_features) < 1:
            raise ValueError("in_features must be at least 1")
        self.register_buffer("feature_mean", torch.zeros(int(in_features)))
        self.register_buffer("feature_std", torch.ones(int(in_features)))
        self.encoder = nn.Sequential(nn.Linear(int(in_features), hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.convs = nn.ModuleList(
            TransformerConv(hidden, hidden, heads=heads, concat=False, edge_dim=edge_features, dropout=dropout,
                            root_weight=True)
            for _ in range(int(layers))
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(int(layers)))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(torch.clamp(std, min=1e-6))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        own = self.encoder((x - self.feature_mean) / self.feature_std)
        hidden = own
        for conv, norm in zip(self.convs, self.norms):
            hidden = norm(hidden + torch.relu(conv(self.dropout(hidden), edge_index, edge_attr)))
        return self.head(torch.cat([own, hidden], dim=-1)).squeeze(-1)


@register("medcad:CandidateGraphAttention")
def candidate_graph_attention(**params) -> CandidateGraphAttention:
    return CandidateGraphAttention(**params)
