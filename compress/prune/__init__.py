"""Pruning passes: structured (heads, FFN channels) and whole layers."""
