"""Quantization steps selected by a recipe's `quantization.scheme`."""
