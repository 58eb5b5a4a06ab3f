"""Deployment bundles: the packager, the manifest and its verification, safe archives, the Triton layout
and the model card."""
