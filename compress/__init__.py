"""Compression passes. Each pass is one module that registers itself; see compress.base."""
