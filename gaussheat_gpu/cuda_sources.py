"""The CUDA C sources of the CuPy backend (the top-level ``kernels/`` folder).

In a source checkout they are read from ``kernels/`` beside the package; an installed wheel carries
them as ``gaussheat_gpu/_cuda_sources/`` (pyproject.toml force-includes the folder there).
Reading them needs no GPU and no CuPy.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

HEADER = "gaussheat.cuh"
RENDER_PIXEL = "render_pixel.cu"
COUNT_SUMS = "count_sums.cu"

# Tiles of the per-pixel CSR kernel lists: a warp covers 32 consecutive columns of one tile row,
# so its threads walk the same kernel list and read each kernel's parameters as one broadcast.
TILE_HEIGHT = 8
TILE_WIDTH = 32


def source_dir() -> Path:
    """Folder holding the CUDA sources (installed copy first, then the source checkout's)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_cuda_sources", package.parent / "kernels"):
        if (candidate / HEADER).is_file():
            return candidate
    raise FileNotFoundError(f"CUDA sources not found next to {package} (looked for _cuda_sources/ and ../kernels/)")


@cache
def read(name: str) -> str:
    """Text of one source file in :func:`source_dir`."""
    return (source_dir() / name).read_text()


def operation(name: str) -> str:
    """An ElementwiseKernel operation body: the file without its ``//`` comment lines."""
    return "\n".join(line for line in read(name).splitlines() if not line.lstrip().startswith("//")).strip()
