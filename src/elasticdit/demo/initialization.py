"""The demo model's initialisation: DiT's adaLN-Zero, and the T-DVAE started as an exact Haar codec."""

from __future__ import annotations

import torch
from torch import nn

from ..model.pipeline import Models


def init_weights(models: Models, seed: int, token_std: float | None = None) -> None:
    """DiT's initialisation: Xavier linears, adaLN modulation and output projections zeroed (adaLN-Zero).

    The text encoder's position embedding starts at N(0, 0.02); its token embedding at N(0, token_std), or at
    PyTorch's N(0, 1) when None, where the word's identity outweighs its position about 50 to 1.
    """
    torch.manual_seed(seed)
    dit = models.transformer
    for module in dit.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    for r in models.cfg.elastic.compression_ratios:
        proj = dit.pos_embed.projection(r)
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.zeros_(dit.proj_out_for(r).weight)
        nn.init.zeros_(dit.proj_out_for(r).bias)
    for embedder in (dit.time_text_embed.timestep_embedder, dit.time_text_embed.text_embedder):
        nn.init.normal_(embedder.linear_1.weight, std=0.02)
        nn.init.normal_(embedder.linear_2.weight, std=0.02)
    for block in dit.transformer_blocks:
        for norm in (block.norm1, block.norm1_context):
            nn.init.zeros_(norm.linear.weight)
            nn.init.zeros_(norm.linear.bias)
    nn.init.zeros_(dit.norm_out.linear.weight)
    nn.init.zeros_(dit.norm_out.linear.bias)
    if models.text_encoder is not None:
        nn.init.normal_(models.text_encoder.position_embedding, std=0.02)
        if token_std is not None:
            nn.init.normal_(models.text_encoder.token_embedding.weight, std=token_std)
    if models.vae is not None and models.vae.encoder is not None:
        init_vae_haar(models.vae)


@torch.no_grad()
def init_vae_haar(vae: nn.Module) -> None:
    """Start the T-DVAE as an exact Haar codec of the image's block means (one latent cell's block; colour and
    silhouettes from step 0).

    Latent channels 0-2 carry the block means of R, G, B (plus one, so black is zero); through the ReLUs the
    coarsest LL band travels as a (+x, -x) pair of channels, and every residual block starts as the identity
    (its last conv zeroed). The other channels start random and learn the detail (edges) on top.
    """
    enc, dec = list(vae.encoder), list(vae.decoder)  # top level: the stage convs, not the blocks' convs
    for block in [m for m in vae.modules() if m.__class__.__name__ == "Block"]:
        nn.init.zeros_(block.conv[-1].weight)
        nn.init.zeros_(block.conv[-1].bias)
    convs_e = [m for m in enc if isinstance(m, nn.Conv2d)]
    convs_d = [m for m in dec if isinstance(m, nn.Conv2d)]

    def route(conv: nn.Conv2d, pairs: list[tuple[int, int, float]]) -> None:
        outs = {o for o, _, _ in pairs}
        c = conv.kernel_size[0] // 2
        for o in outs:
            conv.weight[o].zero_()
            conv.bias[o] = 0.0
        for o, i, w in pairs:
            conv.weight[o, i, c, c] = w

    # encoder: DWT (LL of colour c at index c) -> +LL / -LL pair in channels c, c + 3; LL of those onward
    route(convs_e[0], [(c, c, 1.0) for c in range(3)] + [(c + 3, c, -1.0) for c in range(3)])
    for conv in convs_e[1:-1]:
        route(conv, [(j, j, 1.0) for j in range(6)])
    # the last LL band is 2**levels x the block mean m in [-1, 1]; the latent holds m + 1, so black is 0
    gain = float(2 ** len(convs_d[1:]))
    route(convs_e[-1], [(c, c, 1 / gain) for c in range(3)] + [(c, c + 3, -1 / gain) for c in range(3)])
    convs_e[-1].bias[:3] = 1.0
    # decoder: latent c -> (+, -) pair of the LL band; each IDWT stage's LL band of channel j from channel j
    route(convs_d[0], [(c, c, gain) for c in range(3)] + [(c + 3, c, -gain) for c in range(3)])
    convs_d[0].bias[:3], convs_d[0].bias[3:6] = -gain, gain
    stages = convs_d[1:]
    for conv in stages:  # the detail bands (LH, HL, HH) of the routed channels start at zero
        width = conv.out_channels // 4
        routed = 6 if conv is not stages[-1] else 3
        route(conv, [(band * width + j, 0, 0.0) for band in range(1, 4) for j in range(routed)])
    for conv in stages[:-1]:
        route(conv, [(j, j, 1.0) for j in range(6)])
    route(stages[-1], [(c, c, 1.0) for c in range(3)] + [(c, c + 3, -1.0) for c in range(3)])
