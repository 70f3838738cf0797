"""`tiles`: SSBA for ExecuTorch/XNNPACK as static gathers plus batched 3-D matmuls.

The pattern's tables (rolled tile-major token order, each query tile's key tiles) become constant index
tensors. Query tiles whose clamped windows coincide (edge and corner tiles) form one group, so each distinct
window's keys and values are gathered once and its matmuls get `m * T*T` query rows. Per group size:

    K_g, V_g = embedding(idx_k, k), embedding(idx_k, v)   # [BH*groups, window tokens + text, D]
    Q_g      = embedding(idx_q, q)                         # [BH*groups, m*T*T, D]
    S^T      = bmm(K_g, Q_g^T)                             # scores transposed: XNNPACK repacks the small
    O_g      = bmm(softmax(S^T^T), V_g)                    # right operand Q^T, not the gathered K

Text queries attend every key densely; one `index_select` puts the image tokens back in raster order.
The roll of shifted layers and the tile-major reorder are folded into the indices, so no roll, permute or
tensor above rank 3 is emitted. Outside the XNNPACK delegate stay the gathers (`embedding`) and the final
`index_select`: ExecuTorch runs them with portable kernels. The fully delegated alternative (gathers as
slice + cat chains) measured 10-20% slower; see docs/ssba.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily

from .pattern import SSBAPattern


def window_groups(pattern: SSBAPattern) -> list[tuple[int, list[int], list[int]]]:
    """Query tiles sharing one clamped key window: [(group size m, query tiles, key tiles)], grouped by m so
    that groups of equal size run as one batched matmul; order is deterministic."""
    starts_h, starts_w = pattern.window_starts
    ntw = pattern.tile_grid[1]
    by_window: dict[tuple[int, int], list[int]] = {}
    for t in range(len(pattern.key_tiles)):
        by_window.setdefault((int(starts_h[t // ntw]), int(starts_w[t % ntw])), []).append(t)
    groups = [(len(tiles), tiles, [int(k) for k in pattern.key_tiles[tiles[0]]]) for tiles in by_window.values()]
    return sorted(groups, key=lambda g: (g[0], g[1][0]))


class TilesAttention(nn.Module):
    def __init__(self, head_dim: int, pattern: SSBAPattern):
        super().__init__()
        self.scale = head_dim**-0.5
        self.pattern = pattern
        n, text = pattern.tokens, pattern.text_len
        text_ids = list(range(n, n + text))
        buckets: dict[int, tuple[list[list[int]], list[list[int]]]] = {}
        for m, tiles, keys in window_groups(pattern):
            q_ids = [int(i) for t in tiles for i in pattern.tile_tokens[t]]
            k_ids = [int(i) for t in keys for i in pattern.tile_tokens[t]] + text_ids
            queries, windows = buckets.setdefault(m, ([], []))
            queries.append(q_ids)
            windows.append(k_ids)
        self.buckets = [(np.array(q), np.array(k)) for q, k in buckets.values()]
        inverse = np.empty(n, dtype=np.int64)
        inverse[np.concatenate([q.reshape(-1) for q, _ in self.buckets])] = np.arange(n)
        self.inverse = torch.from_numpy(np.concatenate([inverse, np.arange(n, n + text)]))
        self._flat: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _flat_indices(self, batch: int, seq: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Indices into the [batch*seq, D] view of q/k/v, one row per (batch, group). Computed with numpy so that
        torch.export records them as constants, not as index arithmetic in the graph. Real tensors even when a
        fake-tensor trace (cost counting, `inspection.count_cost`) builds them first: they are cached."""
        if (batch, seq) not in self._flat:
            offset = (np.arange(batch) * seq).reshape(batch, 1, 1)
            with unset_fake_temporarily():
                self._flat[batch, seq] = [
                    (
                        torch.from_numpy((q + offset).reshape(batch * len(q), -1)),
                        torch.from_numpy((k + offset).reshape(batch * len(k), -1)),
                    )
                    for q, k in self.buckets
                ]
        return self._flat[batch, seq]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = q.shape
        n = self.pattern.tokens
        q_flat, k_flat, v_flat = q.reshape(batch * seq, dim), k.reshape(batch * seq, dim), v.reshape(batch * seq, dim)
        outs = []
        for q_idx, k_idx in self._flat_indices(batch, seq):
            keys, values = F.embedding(k_idx, k_flat), F.embedding(k_idx, v_flat)
            queries = F.embedding(q_idx, q_flat) * self.scale
            scores_t = torch.bmm(keys, queries.transpose(1, 2))
            outs.append(torch.bmm(scores_t.transpose(1, 2).softmax(dim=-1), values).reshape(batch, -1, dim))
        if seq > n:
            text_q = q.narrow(1, n, seq - n) * self.scale
            text_scores_t = torch.bmm(k, text_q.transpose(1, 2))
            outs.append(torch.bmm(text_scores_t.transpose(1, 2).softmax(dim=-1), v))
        return torch.index_select(torch.cat(outs, dim=1), 1, self.inverse)
