"""Skip the samples a radio gives while it settles after tuning, keeping its tags."""

import numpy as np
import pmt
from gnuradio import gr

from . import tags
from .items import use_large_buffers

WORK_DONE = -1  # general_work result that ends the flowgraph


class skip_after_tune(gr.basic_block):
    """Drops ``nskip`` samples at the start and after every retune.

    Input and output: complex64 samples. A retune is an ``rx_freq`` tag whose value
    differs from the previous one. GNU Radio's skiphead would also drop the tags in
    the skipped span; here every tag is kept and moved to the first sample that is
    passed on, and ``rx_time`` is restated there, advanced by the samples skipped
    (from the last ``rx_time`` and ``rx_rate``), so the sink dates the data right.
    """

    BLOCK_NAME = "scos_skip_after_tune"

    def __init__(self, nskip: int = 0):
        gr.basic_block.__init__(
            self, name=self.BLOCK_NAME, in_sig=[np.complex64], out_sig=[np.complex64]
        )
        use_large_buffers(self, gr.sizeof_gr_complex)
        if isinstance(nskip, bool) or int(nskip) != nskip or nskip < 0:
            raise ValueError(f"nskip must be a whole number of samples >= 0, got {nskip!r}")
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.nskip = int(nskip)
        self._to_skip = self.nskip
        self._frequency: float | None = None
        self._rate: float | None = None
        self._anchor: tuple[tags.RadioTime, int] | None = None  # rx_time and its input offset
        self._pending: dict[str, object] = {}  # tags waiting for the next sample passed on
        self._restate_time = False

    # Hooks for blocks that decide differently which samples pass (step_tuner).

    def _retuned(self) -> None:
        """An ``rx_freq`` tag with a new frequency was read."""
        self._to_skip = self.nskip

    def _droppable(self, available: int) -> int:
        """How many of the next ``available`` untagged samples to drop."""
        dropped = min(self._to_skip, available)
        self._to_skip -= dropped
        return dropped

    def _passable(self, available: int) -> int:
        """How many of the next ``available`` samples may be passed on now."""
        return available

    def _passed(self, count: int) -> None:
        """``count`` samples were passed on."""

    def _finished(self) -> bool:
        """True once the block passes nothing more and the flowgraph may end."""
        return False

    def general_work(self, input_items, output_items):
        source, out = input_items[0], output_items[0]
        first = self.nitems_read(0)
        stream_tags = sorted(
            self.get_tags_in_range(0, first, first + len(source)), key=lambda tag: tag.offset
        )
        consumed = produced = index = 0
        while consumed < len(source) and produced < len(out) and not self._finished():
            while index < len(stream_tags) and stream_tags[index].offset == first + consumed:
                self._note(stream_tags[index])
                index += 1
            boundary = (
                stream_tags[index].offset - first if index < len(stream_tags) else len(source)
            )
            dropped = self._droppable(boundary - consumed)
            if dropped:
                consumed += dropped
                self._restate_time = True
                continue
            count = self._passable(min(boundary - consumed, len(out) - produced))
            self._emit_pending(self.nitems_written(0) + produced, first + consumed)
            out[produced : produced + count] = source[consumed : consumed + count]
            produced += count
            consumed += count
            self._passed(count)
        self.consume(0, consumed)
        if produced == 0 and self._finished():
            return WORK_DONE
        return produced

    def _note(self, tag) -> None:
        key = pmt.symbol_to_string(tag.key)
        if key == "rx_freq":
            frequency = pmt.to_double(tag.value)
            if frequency != self._frequency:
                self._frequency = frequency
                self._retuned()
        elif key == "rx_rate":
            self._rate = pmt.to_double(tag.value)
        if key == "rx_time":
            self._anchor = (tags.RadioTime.from_pmt(tag.value), tag.offset)
            self._restate_time = True
        else:
            self._pending[key] = tag.value

    def _emit_pending(self, output_offset: int, input_offset: int) -> None:
        for key, value in self._pending.items():
            self.add_item_tag(0, output_offset, pmt.intern(key), value)
        self._pending.clear()
        if self._restate_time and self._anchor is not None and self._rate:
            time, anchor_offset = self._anchor
            self.add_item_tag(
                0,
                output_offset,
                tags.RX_TIME,
                time.plus((input_offset - anchor_offset) / self._rate).to_pmt(),
            )
        self._restate_time = False
