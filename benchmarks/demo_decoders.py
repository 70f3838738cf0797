"""The demo's T-DVAE: reconstruction PSNR on held-out renders, and decoder GFLOPs against SD3's VAE decoder and
TAESD3's, each decoder fed a latent of its own downsampling factor (used by demo_quality.py).

diffusers is imported here only (random weights on the meta device, nothing downloaded).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from elasticdit.demo.shapes import heldout_prompts, render
from elasticdit.evaluation import PROMPT_SEED


@torch.no_grad()
def vae_psnr(models, count: int = 256) -> dict:
    size = models.cfg.resolution[0]
    scenes = heldout_prompts(count, PROMPT_SEED + 1)  # renders no training run and no eval prompt uses
    x = torch.from_numpy(np.stack([render(s, size) for s in scenes])).permute(0, 3, 1, 2).float() / 255.0
    recon = torch.cat([models.vae.decode(models.vae.encode(b)) for b in x.split(64)])
    recon = (recon * 255).round() / 255  # what a PNG would hold
    mse = ((recon - x) ** 2).flatten(1).mean(1)
    per_image = 10 * torch.log10(1.0 / mse.clamp_min(1e-12))
    return {
        "images": count,
        "resolution": size,
        "psnr_db": float(10 * torch.log10(1.0 / mse.mean())),
        "psnr_db_mean_per_image": float(per_image.mean()),
        "psnr_db_worst_image": float(per_image.min()),
    }


def count_gflops(fn, *args) -> tuple[float, tuple[int, ...]]:
    """(GFLOPs of one call, the output's shape)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    out = getattr(out, "sample", out)  # diffusers' DecoderOutput
    return counter.get_total_flops() / 1e9, tuple(out.shape)


def decoder_gflops(models, side: int) -> dict:
    """Each decoder's GFLOPs for one side x side image, fed a latent of its own downsampling factor (the T-DVAE's
    from the checkpoint's config, 4 for the demo; 8 for SD3's VAE and TAESD3), and the image size it decoded."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    with torch.device("meta"):
        sd3 = AutoencoderKL(  # stabilityai/stable-diffusion-3-medium, vae/config.json
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=16,
            norm_num_groups=32,
            sample_size=1024,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ).eval()
        taesd3 = AutoencoderTiny(latent_channels=16).eval()  # madebyollin/taesd3: TAESD with 16 channels
        factors = {
            "sd3": 2 ** (len(sd3.config.block_out_channels) - 1),
            "taesd3": taesd3.config.upsampling_scaling_factor ** (len(taesd3.config.decoder_block_out_channels) - 1),
        }
        with torch.no_grad():
            sd3_g, sd3_out = count_gflops(
                sd3.decode, torch.zeros(1, 16, side // factors["sd3"], side // factors["sd3"])
            )
            tiny_latent = torch.zeros(1, 16, side // factors["taesd3"], side // factors["taesd3"])
            tiny_g, tiny_out = count_gflops(taesd3.decode, tiny_latent)
    cfg = models.cfg.vae
    factors["tdvae"] = cfg.downsample
    with torch.no_grad():
        latent = torch.zeros(1, cfg.latent_channels, side // cfg.downsample, side // cfg.downsample)
        ours, ours_out = count_gflops(models.vae.decode, latent)
    return {
        "resolution": side,
        "downsample": factors,
        "output_px": {"tdvae": ours_out[-1], "sd3": sd3_out[-1], "taesd3": tiny_out[-1]},
        "tdvae_gflops": ours,
        "sd3_vae_gflops": sd3_g,
        "taesd3_gflops": tiny_g,
        "vs_sd3": ours / sd3_g,
        "vs_taesd3": ours / tiny_g,
        "meets_1_8_of_sd3": ours <= sd3_g / 8,
        "meets_taesd3": ours <= tiny_g,
    }
