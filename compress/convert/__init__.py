"""Precision conversion passes."""
