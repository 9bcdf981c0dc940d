"""Compiling the backend's paths ahead of time, and which of them the cache already holds.

``gaussheat warmup`` renders one small case per path (:data:`PATHS`), so that each compiles once
and lands in the cache (:mod:`.cache`): a Docker image or CI cache built after it starts every
process warm. :func:`cache_status` reads the cache without compiling anything.
"""

from __future__ import annotations

import time

import numpy as np

from . import cache, calls, dense, neighbours, planning, tiles

DTYPES = ("float32", "float64")


def _kernels(n, width, height, rotated, rng):
    from ...kernel_set import Kernels

    return Kernels(x=rng.uniform(0, width, n), y=rng.uniform(0, height, n), sigma_x=rng.uniform(1, 4, n),
                   sigma_y=rng.uniform(1, 4, n), theta=rotated * rng.uniform(0.1, 1.5, n))


def _mixed(rng):
    from ...kernel_set import Kernels

    a, b = _kernels(3, 40, 30, 0.0, rng), _kernels(3, 40, 30, 1.0, rng)
    return Kernels(**{name: np.concatenate([a.as_dict()[name], b.as_dict()[name]]) for name in ("x", "y", "sigma_x",
                                                                                                "sigma_y", "theta")})


def _wide(rng):
    from ...kernel_set import Kernels

    return Kernels(x=[500.0], y=[520.0], sigma_x=[300.0], sigma_y=[260.0])


# Path name -> (kernels(rng), shape, render options). Together they compile every entry point.
PATHS = {
    "bands, axis-aligned kernels": (lambda rng: _kernels(4, 40, 30, 0.0, rng), (30, 40), {}),
    "bands, rotated kernels": (lambda rng: _kernels(4, 40, 30, 1.0, rng), (30, 40), {}),
    "bands, both kinds": (_mixed, (30, 40), {}),
    "dense product": (_wide, (1024, 1024), {"truncate": None}),
    "planner, parallel chunks": (lambda rng: _kernels(planning.CHUNK + 1, 64, 64, 1.0, rng), (64, 64), {}),
}


def _density_helpers(rng):
    """``targets.density_map``'s compiled passes: the adaptive sigma's k-NN and the window sums."""
    from ...targets import density_request

    density_request(rng.uniform(0, 40, (20, 2)), (30, 40), sigma="adaptive", border="constant")


def _binning(rng):
    """The binning of batches and large plans (small plans of one image need none: :func:`.tiles.every_band`)."""
    from ...api import render

    render(_kernels(4, 40, 30, 0.0, rng), (2, 30, 40), backend="numba")


# Compiled code that is the same for both output dtypes: name -> function(rng).
HELPERS = {"binning: batches, large plans": _binning, "density_map: k-NN, window sums": _density_helpers}


def warmup(all_dtypes=False, report=None):
    """Compile (and cache) every path of the backend for float32 outputs, or for both dtypes.

    Parameters
    ----------
    all_dtypes : bool
        Also compile the float64 specialisations (``gaussheat warmup --all``).
    report : callable, optional
        Called with ``(path, dtype, seconds)`` after each path.

    Returns
    -------
    list of (str, str, float)
        Path, output dtype (``"any"`` for :data:`HELPERS`) and seconds taken (compiling, or loading
        from the cache).

    Examples
    --------
    >>> rows = warmup()  # doctest: +SKIP
    """
    from ...api import render

    rows = []
    for dtype in DTYPES if all_dtypes else DTYPES[:1]:
        for name, (make, shape, options) in PATHS.items():
            kernels = make(np.random.default_rng(0))
            start = time.perf_counter()
            render(kernels, shape, backend="numba", dtype=dtype, **options)
            rows.append((name, dtype, time.perf_counter() - start))
            if report is not None:
                report(*rows[-1])
    for name, run in HELPERS.items():
        start = time.perf_counter()
        run(np.random.default_rng(0))
        rows.append((name, "any", time.perf_counter() - start))
        if report is not None:
            report(*rows[-1])
    return rows


def cache_status():
    """Which paths the cache holds compiled code for, for this source and this machine.

    Returns
    -------
    dict
        ``(path, dtype) -> bool`` for every path of :data:`PATHS` and both output dtypes (compiled
        code that does not depend on the dtype counts for both), and ``(name, "any")`` for each of
        :data:`HELPERS`.
    """
    def has(dispatcher, test=lambda sig: True):
        return any(test(key[0]) for key in cache.valid_entries(dispatcher))

    # calls.run_tasks runs the tasks of the parallel planner, the dense product and density_map,
    # compiled once for each type of the arguments the tasks share (all of a task's but its index).
    shared_types = {tuple(key[0][2]) for key in cache.valid_entries(calls.run_tasks)}

    def runs(task, test=lambda sig: True):
        return has(task, lambda sig: test(sig) and tuple(sig[1:]) in shared_types)

    planner = has(planning.plan_chunk)
    trig = has(planning._libm_cos_sin)  # rotated kernels' planning
    status = {}
    for dtype in DTYPES:
        def bands(axis, rotated, dtype=dtype):
            # The renderer and the function that runs its tasks: each takes (..., images,
            # band_height, combine, normalize, accumulate, axis, rotated) last.
            def fits(sig):
                return sig[-7].dtype.name == dtype and _is_none(sig[-2]) != axis and _is_none(sig[-1]) != rotated
            return planner and has(tiles.render_task, fits) and has(tiles.render_bands, fits)

        status["bands, axis-aligned kernels", dtype] = bands(True, False)
        status["bands, rotated kernels", dtype] = bands(False, True) and trig
        status["bands, both kinds", dtype] = bands(True, True) and trig
        status["dense product", dtype] = planner and all(
            runs(function, lambda sig, at=at: sig[at].dtype.name == dtype)
            for function, at in ((dense._factor_task, 4), (dense._panel_task, 3)))
        status["planner, parallel chunks", dtype] = runs(planning.plan_task)
    status["binning: batches, large plans", "any"] = has(tiles.bin_kernels)
    status["density_map: k-NN, window sums", "any"] = has(neighbours.cell_lists) and all(
        runs(function) for function in (neighbours._nearest, neighbours._window_sums))
    return status


def _is_none(numba_type):
    return str(numba_type) == "none"
