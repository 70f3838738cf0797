"""Shift Sparse Block Attention: the pattern, the masked reference and its backend lowerings."""
