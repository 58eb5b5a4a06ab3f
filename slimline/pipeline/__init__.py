"""The pipeline: plan (all cheap checks), stages (content-addressed stage directories), run (stages,
bench, report), single (the one-stage commands) and the demo checkpoint."""
