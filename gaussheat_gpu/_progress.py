"""One progress bar on a text stream, for ``gaussheat render`` and :func:`gaussheat_gpu.dask.to_zarr`."""

from __future__ import annotations

import time
from collections.abc import Mapping

WIDTH = 30  # characters between the brackets
REDRAW_S = 0.2  # at most one drawing per this many seconds before the last one


class ProgressBar:
    """A one-line bar over steps of known sizes, redrawn in place::

        map.zarr: [###############...............]  50% 6/12 chunks, 41.3 Mpixel/s, 1.2 s, 1 s left

    Parameters
    ----------
    sizes : mapping or sequence of int
        The work of each step (pixels of a chunk, kernels of a part), by step key; a sequence's
        keys are 0, 1, ... The percentage, rate and time left count work, not steps.
    label : str
        Printed before the bar.
    stream : text file or None
        Where to draw; None draws nothing.
    steps : str, default "chunks"
        What a step is called.
    work : str, default "pixel"
        What the work is counted in: the rate reads ``M<work>/s``.
    delay : float, default 0.0
        Seconds after which the bar first shows: a shorter run draws nothing at all.
    clock : callable, default time.perf_counter
        Seconds, for the elapsed time.

    Examples
    --------
    >>> import io
    >>> stream = io.StringIO()
    >>> bar = ProgressBar([100, 100], "demo", stream, steps="parts", work="kernel")
    >>> bar.tick(0); bar.tick(1); bar.close()
    >>> stream.getvalue().split(", ")[0]
    '\\rdemo: [##############################] 100% 2/2 parts'
    """

    def __init__(self, sizes, label, stream, *, steps="chunks", work="pixel", delay=0.0, clock=time.perf_counter):
        self.sizes = dict(sizes) if isinstance(sizes, Mapping) else dict(enumerate(sizes))
        self.label, self.stream, self.steps, self.work, self.delay, self.clock = label, stream, steps, work, delay, clock
        self.total_work = sum(self.sizes.values())
        self.done = self.done_work = 0
        self.start = self.drawn = clock()

    def tick(self, key):
        """Count step ``key`` as done; redraw unless the last drawing is recent (``close`` draws the end)."""
        self.done += 1
        self.done_work += self.sizes[key]
        now = self.clock()
        if self.done < len(self.sizes) and now - self.drawn >= REDRAW_S and now - self.start >= self.delay:
            self.drawn = now
            self._draw(now)

    def close(self):
        """Draw the final state and end the line (nothing if ``delay`` has not passed)."""
        now = self.clock()
        if now - self.start >= self.delay:
            self._draw(now, end="\n")

    def _draw(self, now, end=""):
        if self.stream is None:
            return
        elapsed = now - self.start
        fraction = self.done_work / self.total_work if self.total_work else self.done / max(len(self.sizes), 1)
        filled = int(WIDTH * fraction)
        rate = self.done_work / max(elapsed, 1e-9)
        text = (f"\r{self.label}: [{'#' * filled}{'.' * (WIDTH - filled)}] {int(100 * fraction):3d}% "
                f"{self.done}/{len(self.sizes)} {self.steps}, {rate / 1e6:.1f} M{self.work}/s, {elapsed:.1f} s")
        if self.done < len(self.sizes) and rate:
            text += f", {(self.total_work - self.done_work) / rate:.0f} s left"
        self.stream.write(text + end)
        self.stream.flush()
