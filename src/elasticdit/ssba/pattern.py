"""SSBA pattern compiler: the static tables and statistics of one layer's sparse attention.

The rules of docs/design.md ("SSBA semantics"), on an image token grid Gh x Gw cut into T x T tiles:
  * a query tile attends the key tiles of a (2w+1) x (2w+1) window centred on it, clamped to stay inside the
    tile grid (an axis with fewer than 2w+1 tiles is dense);
  * shifted layers (odd block index) roll the grid by -T//2 on both axes before tiling;
  * text tokens are global (every query sees them; text queries see everything).
The joint sequence is [image tokens in raster order, text tokens].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SSBAPattern:
    grid: tuple[int, int]
    tile: int
    window: int
    shifted: bool
    text_len: int
    tile_grid: tuple[int, int]
    tile_tokens: np.ndarray  # [tiles, T*T] raster index of each token, tiles row-major, rolled frame
    key_tiles: np.ndarray  # [tiles, K] key tile ids of each query tile, ascending
    window_starts: tuple[np.ndarray, np.ndarray]  # per axis: first key tile row/col of each tile row/col

    @property
    def shift(self) -> int:
        return self.tile // 2 if self.shifted else 0

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def window_span(self) -> tuple[int, int]:
        """Key tiles per axis: 2w+1, or the whole axis when it has fewer tiles."""
        return tuple(min(2 * self.window + 1, n) for n in self.tile_grid)  # type: ignore[return-value]

    @property
    def is_dense(self) -> bool:
        return self.window_span == self.tile_grid

    @property
    def image_pairs_allowed(self) -> int:
        span_h, span_w = self.window_span
        return self.tokens * span_h * span_w * self.tile * self.tile

    @property
    def image_density(self) -> float:
        return self.image_pairs_allowed / self.tokens**2

    @property
    def image_sparsity(self) -> float:
        return 1.0 - self.image_density

    @property
    def joint_sparsity(self) -> float:
        n = self.tokens + self.text_len
        return (self.tokens**2 - self.image_pairs_allowed) / n**2

    def image_mask(self) -> np.ndarray:
        """Boolean [N, N]: query token (raster) may attend key token (raster)."""
        n = self.tokens
        tile_of = np.empty(n, dtype=np.int64)
        for t, toks in enumerate(self.tile_tokens):
            tile_of[toks] = t
        allowed_tiles = np.zeros((len(self.key_tiles), len(self.key_tiles)), dtype=bool)
        rows = np.repeat(np.arange(len(self.key_tiles)), self.key_tiles.shape[1])
        allowed_tiles[rows, self.key_tiles.reshape(-1)] = True
        return allowed_tiles[tile_of[:, None], tile_of[None, :]]

    def joint_mask(self) -> np.ndarray:
        """Boolean [N + L, N + L] over the joint sequence [image, text]."""
        n, s = self.tokens, self.tokens + self.text_len
        mask = np.ones((s, s), dtype=bool)
        mask[:n, :n] = self.image_mask()
        return mask


def _window_starts(n_tiles: int, window: int) -> np.ndarray:
    span = min(2 * window + 1, n_tiles)
    return np.clip(np.arange(n_tiles) - window, 0, n_tiles - span)


@functools.lru_cache(maxsize=256)
def compile_pattern(grid: tuple[int, int], tile: int, window: int, shifted: bool, text_len: int = 0) -> SSBAPattern:
    """Pure and cached: the same arguments give the same (shared, read-only) tables."""
    gh, gw = grid
    if tile <= 0 or gh % tile or gw % tile:
        raise ValueError(f"SSBA tile {tile} does not divide the {gh}x{gw} token grid")
    if window < 0:
        raise ValueError(f"SSBA window must be non-negative, got {window}")
    nth, ntw = gh // tile, gw // tile
    shift = tile // 2 if shifted else 0

    # Token (y', x') of the rolled frame is raster token ((y' + s) % gh, (x' + s) % gw).
    yr = (np.arange(gh) + shift) % gh
    xr = (np.arange(gw) + shift) % gw
    raster = yr[:, None] * gw + xr[None, :]  # [gh, gw] in the rolled frame
    tile_tokens = raster.reshape(nth, tile, ntw, tile).transpose(0, 2, 1, 3).reshape(nth * ntw, tile * tile)

    starts_h, starts_w = _window_starts(nth, window), _window_starts(ntw, window)
    span_h, span_w = min(2 * window + 1, nth), min(2 * window + 1, ntw)
    ty, tx = np.divmod(np.arange(nth * ntw), ntw)
    key_rows = starts_h[ty][:, None] + np.arange(span_h)[None, :]
    key_cols = starts_w[tx][:, None] + np.arange(span_w)[None, :]
    key_tiles = (key_rows[:, :, None] * ntw + key_cols[:, None, :]).reshape(nth * ntw, span_h * span_w)

    for array in (tile_tokens, key_tiles, starts_h, starts_w):
        array.setflags(write=False)
    return SSBAPattern(
        grid=(gh, gw),
        tile=tile,
        window=window,
        shifted=shifted,
        text_len=text_len,
        tile_grid=(nth, ntw),
        tile_tokens=tile_tokens,
        key_tiles=key_tiles,
        window_starts=(starts_h, starts_w),
    )


def block_is_shifted(block_index: int, shift_rule: str) -> bool:
    """Odd blocks (by their index in the full model) use the shifted tiling."""
    return shift_rule == "odd_blocks" and block_index % 2 == 1
