"""Arrays of examples whose batch axis is not always the first.

A recurrent state input is often `[layers, batch, hidden]`, and a scalar input (shape `[]`) is one value that
every example shares. Eval data, calibration sets and the quality fallback split and batch such arrays along
each input's own batch axis (`axes`: input name -> axis, None for "shared"; inputs not named use axis 0), so
one reading of the layout serves all three.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

BatchAxes = Mapping[str, "int | None"]


def example_count(arrays: Mapping[str, np.ndarray], axes: BatchAxes | None = None) -> int:
    """The number of examples: the size of the first batched input along its batch axis (1: none is batched)."""
    axes = axes or {}
    for name, values in arrays.items():
        axis = axes.get(name, 0)
        if axis is not None:
            return int(np.asarray(values).shape[axis])
    return 1


def take_rows(arrays: Mapping[str, np.ndarray], axes: BatchAxes | None, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The examples `rows` of every batched input (along its axis); shared inputs whole."""
    axes = axes or {}
    return {name: values if axes.get(name, 0) is None else np.take(values, rows, axis=axes.get(name, 0))
            for name, values in arrays.items()}


def batches(arrays: Mapping[str, np.ndarray], batch_size: int,
            axes: BatchAxes | None = None) -> list[dict[str, np.ndarray]]:
    """Consecutive batches of at most `batch_size` examples; an input the batch shares goes whole into each."""
    axes = axes or {}
    if all(axes.get(name, 0) is None for name in arrays):  # nothing to split: the arrays are one call
        return [dict(arrays)]
    count = example_count(arrays, axes)
    return [take_rows(arrays, axes, np.arange(start, min(start + batch_size, count)))
            for start in range(0, count, batch_size)]
