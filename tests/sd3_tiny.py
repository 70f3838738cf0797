"""Tiny random SD3 / SD3.5 diffusers pipelines built in the test process (no hub): a small byte-level BPE
vocabulary for both CLIP tokenizers, a small unigram vocabulary for T5, random weights everywhere."""

from __future__ import annotations

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MERGES = ["a t</w>", "c at</w>", "d o", "do g</w>", "r e", "re d</w>", "o n", "on e</w>", "b l", "bl u", "blu e</w>"]
T5_PIECES = ["▁a", "▁cat", "▁dog", "▁red", "▁blue", "▁one", "▁", "s", "t", *LETTERS]
PROMPTS = ["a red cat", "", "Blue dog!  one, two 3 cats' é", "x " * 90]  # the last is truncated by CLIP


def clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for m in MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, [tuple(m.split()) for m in MERGES]


def randomize(module: torch.nn.Module, seed: int, std: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def tiny_pipeline(dual_attention: tuple[int, ...] = (), qk_norm: str | None = None, t5: bool = True):
    import diffusers
    import transformers

    vocab, merges = clip_vocab()
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tok_2 = transformers.CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=77)
    common = dict(vocab_size=len(vocab), max_position_embeddings=77, num_attention_heads=4, intermediate_size=64)
    clip_l = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(hidden_size=32, num_hidden_layers=3, projection_dim=16, eos_token_id=2, **common)
    ).eval()
    clip_g = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(
            hidden_size=48,
            num_hidden_layers=2,
            projection_dim=16,
            hidden_act="gelu",
            eos_token_id=vocab["<|endoftext|>"],
            **common,
        )
    ).eval()
    t5_model = tok_3 = None
    if t5:
        pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -1.0 - i / 10) for i, p in enumerate(T5_PIECES)]
        tok_3 = transformers.T5TokenizerFast(vocab=pieces, extra_ids=0)
        t5_model = transformers.T5EncoderModel(
            transformers.T5Config(
                vocab_size=len(pieces),
                d_model=96,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                feed_forward_proj="gated-gelu",
                relative_attention_num_buckets=8,
                relative_attention_max_distance=16,
            )
        ).eval()
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=96,
        caption_projection_dim=32,
        pooled_projection_dim=32,
        out_channels=16,
        pos_embed_max_size=16,
        qk_norm=qk_norm,
        dual_attention_layers=dual_attention,
    ).eval()
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    for i, m in enumerate([clip_l, clip_g, t5_model, transformer, vae]):
        if m is not None:
            randomize(m, i, 0.1 if m is not vae else 0.15)
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=clip_l,
        tokenizer=tok,
        text_encoder_2=clip_g,
        tokenizer_2=tok_2,
        text_encoder_3=t5_model,
        tokenizer_3=tok_3,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_taesd():
    import diffusers

    model = diffusers.AutoencoderTiny(
        latent_channels=16,
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 2, 1, 1),
        scaling_factor=1.5305,
        shift_factor=0.0609,
    ).eval()
    randomize(model, 7, 0.1)
    return model
