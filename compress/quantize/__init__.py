"""Quantization passes."""
