"""The CUDA C sources of the CuPy backend (the top-level ``kernels/`` folder).

In a source checkout they are read from ``kernels/`` beside the package; an installed wheel carries
them as ``gaussheat_gpu/_cuda_sources/`` (pyproject.toml force-includes the folder there).
Reading them needs no GPU and no CuPy, so the tests can compile exactly what the backend compiles.

Files:

``gaussheat.cuh``
    Device functions (per-kernel values, combine operators, the per-pixel CSR walk, the count
    pre-pass); the preamble of every ElementwiseKernel. It also compiles as host C++.
``*.cu``
    One ElementwiseKernel operation each: a few lines of code, preceded by ``//`` comments of
    which two give the kernel's signature, ``// in_params: ...`` and ``// out_params: ...``, in
    ``cupy.ElementwiseKernel``'s syntax.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import NamedTuple

HEADER = "gaussheat.cuh"
RENDER_PIXEL = "render_pixel.cu"
COUNT_SUMS = "count_sums.cu"
OPERATIONS = (RENDER_PIXEL, COUNT_SUMS)

# Tiles of the per-pixel CSR kernel lists: a warp covers 32 consecutive columns of one tile row,
# so its threads walk the same kernel list and read each kernel's parameters as one broadcast.
TILE_HEIGHT = 8
TILE_WIDTH = 32


class Operation(NamedTuple):
    """An ElementwiseKernel as written in one ``kernels/*.cu`` file."""

    in_params: str
    out_params: str
    body: str


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
            if sep and key in ("in_params", "out_params"):
                signature[key] = value.strip()
        elif stripped:
            body.append(line)
    missing = {"in_params", "out_params"} - signature.keys()
    if missing or not body:
        raise ValueError(f"{name}: an operation file needs '// in_params:' and '// out_params:' lines and a body "
                         f"(missing: {', '.join(sorted(missing)) or 'body'})")
    return Operation(signature["in_params"], signature["out_params"], "\n".join(body))


def kernel_name(name: str, dtype=None) -> str:
    """Name of the compiled kernel for operation ``name``, recording the output dtype if it has one."""
    stem = "gaussheat_" + Path(name).stem
    return stem if dtype is None else f"{stem}_{dtype}"
