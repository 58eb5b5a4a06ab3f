"""Compression passes. Each pass is one module that registers itself (slimline.compression.base); the catalogue
(slimline.compression.catalogue) finds them without importing them."""
