"""Host scratch arrays that one thread reuses from call to call.

A render of 100k kernels (W6) allocates ~16 MiB of plan tables and temporaries and frees them at the
end. glibc then hands the top of its heap back to the kernel, and the next call page-faults on every
page of it again: ~4,600 faults a call, and W6 renders in a plain timing loop took 22-28 ms on the
2-core VM instead of 13.3-13.7 ms. Arrays taken from a :class:`Workspace` live in one buffer per
name that the thread keeps instead.
"""

from __future__ import annotations

import math
import threading

import numpy as np

KEEP_AT_MOST = 64 * 2**20  # bytes a thread keeps between calls, over all names
SMALL = 1 << 16  # smaller arrays come from NumPy's allocator: its cache is faster than a look-up here


class Workspace(threading.local):
    """Named scratch buffers, one set per thread.

    An array it hands out stays valid until the same thread asks for the same name again: take one
    only for the duration of a call.

    Examples
    --------
    >>> workspace = Workspace()
    >>> a = workspace.empty("info", (100_000, 5), np.float64)
    >>> b = workspace.empty("info", (90_000, 5), np.float64)  # the same memory again
    >>> np.shares_memory(a, b)
    True
    """

    def __init__(self):
        self._buffers = {}

    def empty(self, name, shape, dtype):
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` in the buffer ``name``.

        Parameters
        ----------
        name : str
            Which buffer; arrays that are alive at the same time need different names.
        shape : tuple of int
        dtype : numpy dtype

        Returns
        -------
        numpy.ndarray
            A view of the thread's buffer, or a fresh array when it is small or the buffers would
            grow past ``KEEP_AT_MOST`` bytes.
        """
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < SMALL:
            return np.empty(shape, dtype)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            size = nbytes + nbytes // 4  # room to grow a little between calls
            others = sum(kept.nbytes for key, kept in self._buffers.items() if key != name)
            if others + size > KEEP_AT_MOST:
                return np.empty(shape, dtype)
            buffer = self._buffers[name] = np.empty(size, dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)


# The package's per-thread scratch: the Numba backend's plan tables and band scratch, and each Dask
# task's plan and window (their names differ), within one budget a thread.
SCRATCH = Workspace()
