"""SD3's text conditioning: two CLIP text models and an optional T5 encoder, combined exactly as diffusers'
`StableDiffusion3Pipeline.encode_prompt` combines them.

text = concat(CLIP-L penultimate states, CLIP-G penultimate states) along features, zero-padded to the joint
width, then the T5 states (zeros when T5 was dropped, as the pipeline does with `text_encoder_3=None`) along the
sequence; pooled = concat(CLIP-L projected pooled, CLIP-G projected pooled). Tokens: one int64 row of
[CLIP-L ids | CLIP-G ids | T5 ids (only when T5 is kept)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..clip_tokenizer import CLIPBPETokenizer, SpecialTokens, TokenizerError
from ..sd3_config import SD3TextConfig, TokenizerConfig, tokenizer_files
from .clip_text import CLIPTextModelWithProjection
from .t5_encoder import T5EncoderModel


def clip_tokenizer(tok: TokenizerConfig, files: dict[str, str]) -> CLIPBPETokenizer:
    vocab, merges = (files[name] for name in tokenizer_files(tok))
    special = SpecialTokens(tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token, tok.extra_tokens)
    return CLIPBPETokenizer.from_files(vocab, merges, special, tok.max_length)


class T5Tokenizer:
    """T5's SentencePiece-unigram tokenizer run from its `tokenizer.json` by the `tokenizers` library (the exact
    pipeline transformers' T5TokenizerFast runs), truncated to max_length with `</s>` kept, padded with the pad."""

    def __init__(self, tok: TokenizerConfig, tokenizer_json: str):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenizerError("T5 tokens need the 'tokenizers' package (pip install tokenizers)") from None
        try:
            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # the Rust library raises its own exception type
            raise TokenizerError(f"tokenizer.json of T5 cannot be read: {str(exc).splitlines()[0]}") from None
        pad = self.tokenizer.token_to_id(tok.pad_token)
        if pad is None:
            raise TokenizerError(f"the T5 vocabulary lacks the pad token {tok.pad_token!r}")
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(tok.max_length)
        self.tokenizer.enable_padding(length=tok.max_length, pad_id=pad, pad_token=tok.pad_token)

    def __call__(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt).ids


class SD3TextEncoders(nn.Module):
    def __init__(self, cfg: SD3TextConfig, text_dim: int):
        super().__init__()
        self.cfg, self.text_dim = cfg, text_dim
        self.clip_len = cfg.tokenizer_l.max_length
        self.clip_l = CLIPTextModelWithProjection(cfg.clip_l)
        self.clip_g = CLIPTextModelWithProjection(cfg.clip_g)
        self.t5 = T5EncoderModel(cfg.t5, cfg.t5_len) if cfg.t5 is not None else None
        self._tokenizers: list | None = None

    @property
    def token_count(self) -> int:
        """Length of the token row `forward` takes."""
        return 2 * self.clip_len + (self.cfg.t5_len if self.t5 is not None else 0)

    def load_tokenizers(self, files: dict[str, str]) -> None:
        """From the checkpoint's stored files (`folder/name` -> text)."""
        toks = [clip_tokenizer(self.cfg.tokenizer_l, files), clip_tokenizer(self.cfg.tokenizer_g, files)]
        if self.t5 is not None:
            (name,) = tokenizer_files(self.cfg.tokenizer_t5)
            toks.append(T5Tokenizer(self.cfg.tokenizer_t5, files[name]))
        self._tokenizers = toks

    def tokenize(self, prompt: str) -> torch.Tensor:
        """[1, 2 * clip_len (+ t5_len)] int64."""
        if self._tokenizers is None:
            raise TokenizerError("no tokenizer files were loaded for these text encoders")
        return torch.tensor([[i for tok in self._tokenizers for i in tok(prompt)]], dtype=torch.int64)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, 2 * clip_len (+ t5_len)] -> text [B, clip_len + t5_len, text_dim], pooled [B, P_l + P_g]."""
        n = self.clip_len
        hidden_l, pooled_l = self.clip_l(tokens[:, :n])
        hidden_g, pooled_g = self.clip_g(tokens[:, n : 2 * n])
        clip = torch.cat([hidden_l, hidden_g], dim=-1)
        clip = F.pad(clip, (0, self.text_dim - clip.shape[-1]))
        if self.t5 is not None:
            t5 = self.t5(tokens[:, 2 * n :])
        else:
            t5 = torch.zeros(tokens.shape[0], self.cfg.t5_len, self.text_dim, dtype=clip.dtype)
        return torch.cat([clip, t5], dim=1), torch.cat([pooled_l, pooled_g], dim=-1)
