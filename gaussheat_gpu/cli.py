"""Command line: ``gaussheat demo``, ``gaussheat info``, ``gaussheat render`` and ``gaussheat warmup`` (also
``python -m gaussheat_gpu``)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from importlib import metadata

from . import __version__, backends, cli_render, render
from .workloads import seed_loop, seed_workload

CROP = 64  # the seed's Python loop is timed on a CROP x CROP corner and scaled by pixel count


def main(argv=None) -> int:
    """Entry point of the ``gaussheat`` console script.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0, or 2 after a one-line error on stderr (bad arguments, input files or
        environment, a file that cannot be written, a missing optional dependency, a backend that
        cannot run), never a traceback.
    """
    parser = argparse.ArgumentParser(prog="gaussheat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="render the Stack Overflow seed heatmap to a PNG and time every backend")
    demo.add_argument("--output", default="seed.png", help="PNG file to write (default seed.png)")
    demo.add_argument("--repeat", type=_positive_int, default=20, help="timed calls per backend (default 20)")
    commands.add_parser("info", help="version, backends that can run here and why the others cannot, devices")
    cli_render.add_parser(commands)
    warm = commands.add_parser("warmup", help="compile and cache the Numba backend's paths ahead of time "
                                              "(for Docker images and CI caches)")
    warm.add_argument("--all", action="store_true", help="float64 outputs too (default: float32 only)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(args.output, args.repeat)
        if args.command == "render":
            return cli_render.run(args)
        if args.command == "warmup":
            return run_warmup(args.all)
        return run_info()
    except (ValueError, TypeError, MemoryError, OSError, ImportError, backends.BackendUnavailable) as exc:
        print(f"gaussheat {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def _median_seconds(call, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _format_seconds(seconds):
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= factor:
            return f"{seconds / factor:8.2f} {unit}"
    return f"{seconds / 1e-9:8.2f} ns"


def run_demo(output, repeat) -> int:
    """Render the seed case (W1) with every available backend, print timings, save a PNG."""
    _check_writable(output)
    case = seed_workload()
    height, width = case.shape
    print(f"gaussheat_gpu {__version__}: the Stack Overflow 44945111 seed, {height}x{width}, "
          f"I = 1 - (1 - P1)(1 - P2) of two Gaussian pdfs")

    seed_loop(case, rows=1, cols=1)  # imports scipy.stats, which must not count as loop time
    start = time.perf_counter()
    seed_loop(case, rows=CROP, cols=CROP)
    loop_seconds = (time.perf_counter() - start) * (height * width) / (CROP * CROP)
    rows = [("the seed's Python double loop (64x64 crop, scaled)", loop_seconds, None)]

    heat = None
    for name in backends.available():
        def call(name=name):
            return render(case.kernels, case.shape, backend=name, **case.options)

        start = time.perf_counter()
        result = call()
        first = time.perf_counter() - start
        if name == "cupy":
            import cupy

            def call(name=name, inner=call):  # noqa: F811 - time to a finished result on the host
                result = inner()
                cupy.cuda.get_current_stream().synchronize()
                return result

        rows.append((f"gaussheat_gpu, backend={name}", _median_seconds(call, repeat), first))
        if heat is None:
            heat = backends.get(name).xp.asnumpy(result) if name == "cupy" else result

    print(f"\n{'method':<54}{'median':>12}{'speed-up':>12}{'first call':>14}")
    for label, seconds, first in rows:
        speedup = loop_seconds / seconds
        first_text = _format_seconds(first) if first is not None else ""
        print(f"{label:<54}{_format_seconds(seconds):>12}{speedup:>11.0f}x{first_text:>14}")
    _save_png(heat, output)
    print(f"\nwrote {output} (max {float(heat.max()):.3g}); "
          f"speed-up is over the seed's loop; first call includes compilation")
    return 0


def _check_writable(path):
    """Raise OSError now, not after the timings, when ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"--output {path!r} is a directory")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PermissionError(f"--output {path!r} cannot be written (permission denied)")


def _save_png(image, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("the demo's PNG needs matplotlib: pip install 'gaussheat_gpu[plot]'") from None
    from matplotlib.colors import PowerNorm

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    # K2's peak is 8x below K1's: a power-law scale keeps the elongated kernel visible.
    shown = ax.imshow(image, cmap="inferno", origin="upper", norm=PowerNorm(gamma=0.35))
    ax.set_title("seed: K1 (round) inside K2 (sigma_y = 2 sigma_x), por of pdfs", fontsize=10)
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    fig.colorbar(shown, ax=ax, label="I = 1 - (1 - P1)(1 - P2)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_info() -> int:
    """Print the version, each backend's status, and the CUDA devices."""
    print(f"gaussheat_gpu {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for package in ("numpy", "scipy", "numba", "cupy"):
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = next((metadata.version(d) for d in ("cupy-cuda13x", "cupy-cuda12x")
                            if _installed(d)), "not installed") if package == "cupy" else "not installed"
        print(f"  {package:<8}{version}")
    print("backends (best first):")
    for name in backends.names():
        reason = backends.unavailable_reason(name)
        print(f"  {name:<8}{'available' if reason is None else 'unavailable: ' + reason}")
    try:
        auto = backends.name_of(backends.get("auto"))
    except (ValueError, TypeError, backends.BackendUnavailable) as exc:
        auto, status = f"error: {_one_line(exc)}", exc
    else:
        status = None
    print(f"  auto -> {auto}")
    _print_numba_cache()
    print("CUDA devices:")
    try:
        from .backends import cupy as cupy_backend
    except ImportError as exc:
        print(f"  none usable: {exc}")
    else:
        for line in cupy_backend.device_info():
            print(f"  {line}")
    if status is not None:
        raise status
    return 0


def run_warmup(all_dtypes) -> int:
    """Compile and cache every path of the Numba backend (float32 outputs, or both dtypes)."""
    backends.get("numba")  # BackendUnavailable, if it cannot run: one line and exit status 2 in main
    from .backends.numba import cache, warmup

    print(f"compiling into {cache.location() or 'no cache (every process compiles again)'}")
    start = time.perf_counter()
    warmup.warmup(all_dtypes, report=lambda path, dtype, seconds: print(f"  {path:<32}{dtype:<9}{seconds:8.2f} s"))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _print_numba_cache():
    if backends.unavailable_reason("numba") is not None:
        return
    from .backends.numba import cache, warmup

    status = warmup.cache_status()
    print(f"numba cache: {cache.location() or 'none (every process compiles again)'}")
    for dtype in warmup.DTYPES:
        cold = [path for (path, kind), cached in status.items() if kind == dtype and not cached]
        state = "warm" if not cold else "cold" if len(cold) == len(warmup.PATHS) else "cold for " + ", ".join(cold)
        print(f"  {dtype}: {state}")
    for name in warmup.HELPERS:
        print(f"  {name}: {'warm' if status[name, 'any'] else 'cold'}")
    if not all(status.values()):
        print("  (gaussheat warmup --all compiles every path ahead of time)")


def _installed(distribution):
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
