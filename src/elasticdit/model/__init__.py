"""The PyTorch reference: ElasticDiT (SD3-style MMDiT), T-DVAE, tiny text encoder, rectified-flow sampler."""
