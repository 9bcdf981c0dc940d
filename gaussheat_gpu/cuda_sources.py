"""The CUDA C sources of the CuPy backend (the top-level ``kernels/`` folder).

In a source checkout they are read from ``kernels/`` beside the package; an installed wheel carries
them as ``gaussheat_gpu/_cuda_sources/`` (pyproject.toml force-includes the folder there).
Reading them needs no GPU and no CuPy, so the tests can compile exactly what the backend compiles.

Files:

``gaussheat.cuh``
    Device functions (planning, tile binning, per-kernel values, combine operators, the per-pixel
    walk of a tile's kernel list, the dense path's factors); the preamble of every
    ElementwiseKernel. It also compiles as host C++.
``*.cu``
    One ElementwiseKernel operation each: a few lines of code, preceded by ``//`` comments of
    which two give the kernel's signature, ``// in_params: ...`` and ``// out_params: ...``, in
    ``cupy.ElementwiseKernel``'s syntax, and an optional ``// options: ...`` line of NVRTC options.

A call runs them in this order (gaussheat_gpu/backends/cupy/): ``plan_kernels`` (one thread per
kernel), a prefix sum and a column-wise min on the device, one read of the summary by the host,
then either ``dense_factors`` and a matrix product, or ``count_lanes`` (rotated count kernels only),
``bin_kernels``, a stable argsort of the tile keys, ``finish_bins`` and ``render_tiles``. A plan made
on the host (a window of a larger map's plan, for Dask chunks) enters through ``plan_rows`` instead.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import NamedTuple

HEADER = "gaussheat.cuh"
PLAN_KERNELS = "plan_kernels.cu"
PLAN_ROWS = "plan_rows.cu"
COUNT_LANES = "count_lanes.cu"
BIN_KERNELS = "bin_kernels.cu"
FINISH_BINS = "finish_bins.cu"
RENDER_TILES = "render_tiles.cu"
DENSE_FACTORS = "dense_factors.cu"
OPERATIONS = (PLAN_KERNELS, PLAN_ROWS, COUNT_LANES, BIN_KERNELS, FINISH_BINS, RENDER_TILES, DENSE_FACTORS)

# Square tiles of the render kernel (GH_TILE in the header): one 256-thread block per tile, so a
# warp's 32 threads share one kernel list and read each kernel's parameters as one broadcast.
TILE = 16
TILE_PIXELS = TILE * TILE
# Lanes per kernel of the count pass for rotated kernels (GH_COUNT_LANES).
COUNT_LANES_PER_KERNEL = 32


class Operation(NamedTuple):
    """An ElementwiseKernel as written in one ``kernels/*.cu`` file."""

    in_params: str
    out_params: str
    body: str
    options: tuple = ()


def source_dir() -> Path:
    """Folder holding the CUDA sources (installed copy first, then the source checkout's)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_cuda_sources", package.parent / "kernels"):
        if (candidate / HEADER).is_file():
            return candidate
    raise FileNotFoundError(f"CUDA sources not found next to {package} (looked for _cuda_sources/ and ../kernels/)")


def source_names() -> list[str]:
    """Every CUDA source in :func:`source_dir` (the header and the operations), sorted."""
    return sorted(path.name for path in source_dir().iterdir() if path.suffix in (".cu", ".cuh"))


@cache
def read(name: str) -> str:
    """Text of one source file in :func:`source_dir`."""
    return (source_dir() / name).read_text()


@cache
def operation(name: str) -> Operation:
    """The signature and body of the ElementwiseKernel operation in ``kernels/<name>``.

    Raises
    ------
    ValueError
        The file lacks its ``// in_params:`` or ``// out_params:`` line, or has no code.
    """
    signature, body = {}, []
    for line in read(name).splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            key, sep, value = stripped[2:].strip().partition(":")
            if sep and key in ("in_params", "out_params", "options"):
                signature[key] = value.strip()
        elif stripped:
            body.append(line)
    missing = {"in_params", "out_params"} - signature.keys()
    if missing or not body:
        raise ValueError(f"{name}: an operation file needs '// in_params:' and '// out_params:' lines and a body "
                         f"(missing: {', '.join(sorted(missing)) or 'body'})")
    return Operation(signature["in_params"], signature["out_params"], "\n".join(body),
                     tuple(signature.get("options", "").split()))


def render_defines(combine: int, normalize: int, eval64: bool) -> dict:
    """Compile-time switches of ``render_tiles.cu``: the combine and normalize codes, float64 evaluation.

    Returns
    -------
    dict of str to int
    """
    return {"GH_COMBINE": int(combine), "GH_NORMALIZE": int(normalize), "GH_EVAL64": int(bool(eval64))}


def preamble(defines=None) -> str:
    """The header, preceded by ``#define`` lines for ``defines`` (a dict of macro name to int)."""
    lines = "".join(f"#define {name} {value}\n" for name, value in (defines or {}).items())
    return lines + read(HEADER)


def kernel_name(name: str, dtype=None, defines=None) -> str:
    """Name of the compiled kernel for operation ``name``, recording its variant: the output dtype if it
    has one, and the values of its compile-time switches (``render_tiles_float32_c0_n1_e0``)."""
    parts = ["gaussheat_" + Path(name).stem]
    if dtype is not None:
        parts.append(str(dtype))
    for macro, value in (defines or {}).items():
        parts.append(f"{macro.removeprefix('GH_')[0].lower()}{value}")
    return "_".join(parts)
