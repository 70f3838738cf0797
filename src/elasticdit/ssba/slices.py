"""`slices`: SSBA for Core ML / the Neural Engine, from static slices and concats only.

No gather, index or roll op and no tensor above rank 5: the shifted roll is two slices and a concat per
axis; the image is rearranged tile-major with reshape/permute ([B, tile rows, tile cols, T*T, D]); each key
window is built for all tiles at once by concatenating, per window offset, the tile rows/cols that offset
selects (consecutive runs become one slice); the text keys are broadcast onto every tile by a multiply with
ones. Softmax subtracts the row max explicitly so float16 cannot overflow.
"""

from __future__ import annotations

import torch
from torch import nn

from .pattern import SSBAPattern


def stable_softmax(scores: torch.Tensor) -> torch.Tensor:
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _roll(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """torch.roll(x, -shift, dim) as two slices and a concat (torch.roll lowers to gathers)."""
    shift %= x.shape[dim]
    if shift == 0:
        return x
    return torch.cat([x.narrow(dim, shift, x.shape[dim] - shift), x.narrow(dim, 0, shift)], dim)


def _take(x: torch.Tensor, dim: int, indices: list[int]) -> torch.Tensor:
    """x.index_select(dim, indices) for static indices: one slice per run of consecutive indices, then a concat."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    pieces = [x.narrow(dim, start, length) for start, length in runs]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


class SlicesAttention(nn.Module):
    def __init__(self, head_dim: int, pattern: SSBAPattern):
        super().__init__()
        self.scale = head_dim**-0.5
        self.pattern = pattern
        nth, ntw = pattern.tile_grid
        span_h, span_w = pattern.window_span
        starts_h, starts_w = (s.tolist() for s in pattern.window_starts)
        # offset i of the window picks tile row starts_h[a] + i for query tile row a (likewise for columns)
        self.rows = [[s + i for s in starts_h] for i in range(span_h)]
        self.cols = [[s + j for s in starts_w] for j in range(span_w)]
        self.register_buffer("ones", torch.ones(1, nth, ntw, 1, 1), persistent=False)

    def _tile_major(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pattern
        (gh, gw), t, (nth, ntw) = p.grid, p.tile, p.tile_grid
        batch, _, dim = x.shape
        x = _roll(_roll(x.reshape(batch, gh, gw, dim), p.shift, 1), p.shift, 2)
        x = x.reshape(batch * nth, t, ntw, t, dim).permute(0, 2, 1, 3, 4)
        return x.reshape(batch, nth, ntw, t * t, dim)

    def _raster(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        p = self.pattern
        (gh, gw), t, (nth, ntw) = p.grid, p.tile, p.tile_grid
        dim = x.shape[-1]
        x = x.reshape(batch * nth, ntw, t, t, dim).permute(0, 2, 1, 3, 4).reshape(batch, gh, gw, dim)
        x = _roll(_roll(x, -p.shift, 1), -p.shift, 2)
        return x.reshape(batch, gh * gw, dim)

    def _windows(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per window row offset: [B, nth, ntw, span_w*T*T, D], the keys of every tile's window on that row."""
        x = torch.cat([_take(x, 2, cols) for cols in self.cols], 3) if len(self.cols) > 1 else _take(x, 2, self.cols[0])
        return [_take(x, 1, rows) for rows in self.rows]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.pattern
        batch, seq, dim = q.shape
        n, text, tiles, tt = p.tokens, seq - p.tokens, len(p.key_tiles), p.tile * p.tile
        queries = self._tile_major(q.narrow(1, 0, n) * self.scale).reshape(batch * tiles, tt, dim)
        keys = self._windows(self._tile_major(k.narrow(1, 0, n)))
        values = self._windows(self._tile_major(v.narrow(1, 0, n)))
        if text:
            keys.append(k.narrow(1, n, text).reshape(batch, 1, 1, text, dim) * self.ones)
            values.append(v.narrow(1, n, text).reshape(batch, 1, 1, text, dim) * self.ones)
        keys_g = torch.cat(keys, 3).reshape(batch * tiles, -1, dim)
        values_g = torch.cat(values, 3).reshape(batch * tiles, -1, dim)
        image = torch.bmm(stable_softmax(torch.bmm(queries, keys_g.transpose(1, 2))), values_g)
        image = self._raster(image, batch)
        if not text:
            return image
        text_q = q.narrow(1, n, text) * self.scale
        text_out = torch.bmm(stable_softmax(torch.bmm(text_q, k.transpose(1, 2))), v)
        return torch.cat([image, text_out], 1)
