"""Graph-level optimisation passes (no change to the weights' precision)."""
