"""Pluggable quality evaluators (see base.py for how to add one)."""
