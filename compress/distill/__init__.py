"""Distillation passes: a smaller student learns to match a teacher's outputs."""
