"""Compression passes. Each pass is one module that registers itself (slimline.compress.base); the catalogue
(slimline.compress.catalogue) finds them without importing them."""
