"""The bottom layer: errors, optional dependencies, the model directory and its manifest, atomic writes,
hashing, machine facts (CPU flags, GPU), paths, data loading, statistics and progress reporting.
Nothing here imports another slimline layer."""
