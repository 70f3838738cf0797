"""Attention through ExecuTorch's own CPU flash attention, `llama::custom_sdpa` (executorch.extension.llm
.custom_ops): the issue asked whether it beats the lowerings without a kernel of ours. Two formulations:

* `SdpaDense`: dense attention, q/k/v as [1, S, B*H, D] (custom_sdpa's [batch, seq, heads, dim] layout).
* `SdpaWindows`: the `tiles` lowering's gathers (query tiles sharing a window, their window's keys + the
  text keys), each group one custom_sdpa batch entry; text queries dense.

custom_sdpa attends keys [0, start_pos + q_len), so start_pos = kv_len - q_len makes it attend all of them.
Importing this module loads the wheel's custom-ops library, which registers the op for torch.export and the
ExecuTorch runtime alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers torch.ops.llama.*)

from elasticdit.ssba.tiles import TilesAttention


def custom_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q [N, Lq, H, D] against k, v [N, Lk, H, D], every key attended."""
    return torch.ops.llama.custom_sdpa(q, k, v, k.shape[1] - q.shape[1], None, 0.0, False, scale)


class SdpaDense(torch.nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.scale = head_dim**-0.5

    def forward(self, q, k, v):
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        return custom_sdpa(q, k, v, self.scale).squeeze(0).transpose(0, 1)


class SdpaWindows(TilesAttention):
    def forward(self, q, k, v):
        batch, seq, dim = q.shape
        n = self.pattern.tokens
        q_flat, k_flat, v_flat = (t.reshape(batch * seq, dim) for t in (q, k, v))
        outs = []
        for q_idx, k_idx in self._flat_indices(batch, seq):
            keys, values = F.embedding(k_idx, k_flat).unsqueeze(2), F.embedding(k_idx, v_flat).unsqueeze(2)
            queries = F.embedding(q_idx, q_flat).unsqueeze(2)
            outs.append(custom_sdpa(queries, keys, values, self.scale).reshape(batch, -1, dim))
        if seq > n:
            text_q = q.narrow(1, n, seq - n).transpose(0, 1).unsqueeze(0)
            whole_k, whole_v = (t.transpose(0, 1).unsqueeze(0) for t in (k, v))
            outs.append(custom_sdpa(text_q, whole_k, whole_v, self.scale).squeeze(0).transpose(0, 1))
        return torch.index_select(torch.cat(outs, dim=1), 1, self.inverse)
