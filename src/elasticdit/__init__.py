"""elasticdit: take an ElasticDiT checkpoint to phones."""

__version__ = "0.1.0"
