"""Parameter checks and stream item types shared by the blocks."""

import numpy as np


def positive_int(name: str, value) -> int:
    """``value`` as an int, or a ValueError naming ``name`` if it is not a positive integer."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def item_type(dtype, vlen: int):
    """The gateway signature of one item: a scalar, or a vector of ``vlen``."""
    return dtype if vlen == 1 else (dtype, vlen)
