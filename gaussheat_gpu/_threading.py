"""Which threading layer Numba's parallel kernels run on, chosen so that forked workers can render.

Numba picks its threading layer when a process first runs a parallel function: TBB when it can
load ``libtbb``, else OpenMP, else its own ``workqueue``. With GNU OpenMP (the usual Linux
fallback), a process forked after a parallel render aborts when it renders ("fork() called from
a process already using GNU OpenMP") and a fork-started ``multiprocessing.Pool`` hangs: PyTorch's
DataLoader forks its workers by default on Linux. ``workqueue`` survives a fork but aborts when
several threads run parallel functions at once. TBB does both.

The ``tbb`` wheel (a dependency on the platforms it is built for) puts ``libtbb.so.12`` in the
environment's ``lib/`` folder, which the dynamic loader does not search; :func:`prefer_tbb` loads
it before Numba starts its pool, so Numba finds it. Nothing is changed when the caller chose
``omp`` or ``workqueue`` (``NUMBA_THREADING_LAYER``), when Numba already started a layer, or when
no ``libtbb`` is there.

:func:`fork_unsafe_reason` says why a forked process cannot run Numba's parallel code, and the
backend registry then reports the ``numba`` backend unavailable in that process (``"auto"`` falls
back to NumPy) instead of letting the process abort.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

_TBB_NAMES = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")
_state = {"tried": False, "loaded": None}
FORKED = False  # set in a child forked after Numba started a threading layer (here or in a parent)


def _tbb_candidates():
    seen = []
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        for folder in ("lib", "Library/bin", "Lib"):
            for name in _TBB_NAMES:
                seen.extend(glob.glob(os.path.join(prefix, folder, name)))
    return seen


def prefer_tbb() -> str | None:
    """Load ``libtbb`` from the environment so that Numba chooses its fork-safe TBB layer.

    Returns
    -------
    str or None
        The path loaded, or None when nothing was loaded (the caller chose ``omp`` or
        ``workqueue``, Numba already started a layer, or no ``libtbb`` was found). Runs once per
        process.

    Examples
    --------
    >>> path = prefer_tbb()
    >>> path is None or "tbb" in path
    True
    """
    if _state["tried"]:
        return _state["loaded"]
    _state["tried"] = True
    if os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower() in ("omp", "workqueue"):
        return None  # the caller chose a layer that does not need TBB
    if _numba_layer_started():
        return None
    for path in _tbb_candidates():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _state["loaded"] = path
        return path
    return None


def _numba_layer_started() -> bool:
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(parallel is not None and getattr(parallel, "_is_initialized", False))


def current_layer() -> str | None:
    """The threading layer Numba runs in this process, or None before its first parallel call."""
    if not _numba_layer_started():
        return None
    import numba

    return numba.threading_layer()


def _after_fork_in_child():
    # Unsafe only where a threading layer ran before the fork (here or in an earlier parent): a
    # child that starts GNU OpenMP itself runs it like any process.
    global FORKED
    FORKED = FORKED or _numba_layer_started()


os.register_at_fork(after_in_child=_after_fork_in_child)


def fork_unsafe_reason() -> str | None:
    """Why this process cannot run Numba's parallel code, or None when it can.

    A process forked from one that had started Numba's GNU OpenMP layer aborts on its first
    parallel call; TBB, Intel OpenMP and ``workqueue`` survive the fork.
    """
    if not FORKED or current_layer() != "omp":
        return None
    from numba.np.ufunc import omppool

    if getattr(omppool, "openmp_vendor", "") != "GNU":
        return None
    return ("this process was forked from one that had already run Numba's GNU OpenMP threads, which abort "
            "after a fork; install the 'tbb' package (pip install tbb) so that gaussheat_gpu runs Numba on TBB, "
            "or start workers with the 'spawn' or 'forkserver' method")
