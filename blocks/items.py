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


# A Python work() call costs 100-300 us whatever its size. GNU Radio's default
# buffers (32 KiB: 4096 complex samples) would cap a Python block near 10 MS/s;
# buffers of this many bytes let each call take tens of thousands of samples.
STREAM_BUFFER_BYTES = 1 << 22


def use_large_buffers(block, item_size: int, port: int | None = None) -> None:
    """Give ``block``'s output a buffer of about ``STREAM_BUFFER_BYTES``; for a
    device source, only its output ``port``."""
    items = max(1, STREAM_BUFFER_BYTES // item_size)
    if port is not None:
        # Device sources may be C++ hier blocks (osmosdr), which crash on log_level().
        block.set_min_output_buffer(port, items)
        return
    level = block.log_level()
    block.set_log_level("warn")  # GNU Radio logs every buffer size set at info level
    block.set_min_output_buffer(items)
    block.set_log_level(level)
