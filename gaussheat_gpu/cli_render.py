"""``gaussheat render INPUT -o OUTPUT``: a table of kernels in, a heatmap file out.

Inputs: CSV (a header naming the :class:`~gaussheat_gpu.Kernels` columns ``x, y, sigma`` or
``sigma_x``, and optionally ``sigma_y, theta, amplitude, image``), JSON (an object of columns or a
list of row objects), NPY (a structured array with those field names, or an ``(N, k)`` array in
that column order) and NPZ (one array per column), all read without pickles. Outputs, by extension:
PNG (exactly H x W pixels through a colormap), NPY (the array as rendered), TIFF (float32, one
page per image; written here, uncompressed, no dependency) and Zarr (``--chunks N``: chunk by chunk
through :func:`gaussheat_gpu.dask.to_zarr`, resumable, on threads here or on a ``distributed``
cluster with ``--scheduler``; the ``dask`` extra).

A malformed input is refused with its file, line and column and exit status 2; a failed run
leaves no output file (each output is written under a temporary name in its directory, and the
files are renamed only once all of them are written). ``-o`` may be given several times: one
render, several files.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import re
import struct
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

from ._progress import ProgressBar
from ._xp import to_host
from .api import render
from .kernel_set import FIELDS, Kernels
from .planning import COMBINES, NORMALIZES

OUTPUT_SUFFIXES = (".png", ".npy", ".tif", ".tiff", ".zarr")
CHUNK_KERNELS = 20_000  # kernels per render call when a render shows a progress bar
DESCRIPTION = f"""Render a table of kernels to a heatmap file.

INPUT: CSV with a header naming the columns (x, y, sigma or sigma_x; optionally sigma_y, theta,
amplitude, image), JSON (an object of columns or a list of row objects), NPY (a structured array
with those field names, or an (N, k) array in that column order) or NPZ (one array per column),
all read without pickles. OUTPUT, by extension: PNG (exactly H x W pixels through a colormap), NPY
(the array as rendered), TIFF (float32, one page per image), or a Zarr store (with --chunks: rendered
chunk by chunk on Dask, never holding the whole map, on threads here or on the cluster of
--scheduler; rerun to resume an interrupted render). A malformed input is refused with its file,
line and column and exit status 2; a failed run leaves no output file (a Zarr store keeps the
chunks it finished).

A progress bar splits a render of more than {CHUNK_KERNELS:,} kernels into parts accumulated into one output:
their sums can differ from one call's in the last bits. Without a bar (--progress never, or auto
when stderr is not a terminal) the output is bit for bit gaussheat_gpu.render's."""
PROGRESS_AFTER_S = 1.0
PROGRESS = ("auto", "always", "never")


class InputError(ValueError):
    """A malformed input file; the message starts with ``file:line:column:`` where known."""


def add_parser(commands):
    """Add the ``render`` sub-command to an ``argparse`` sub-parsers object."""
    p = commands.add_parser("render", help="render a CSV/JSON/NPY/NPZ table of kernels to PNG, NPY, TIFF or Zarr",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="kernels: .csv, .json, .npy or .npz")
    p.add_argument("-o", "--output", required=True, action="append",
                   help=f"heatmap file: {', '.join(OUTPUT_SUFFIXES)} (repeat for several files of one render; "
                        f".zarr alone, with --chunks)")
    p.add_argument("--shape", help="output shape HxW or BxHxW (default: the pixel grid holding every centre)")
    p.add_argument("--extent", help="x0,x1,y0,y1: coordinates of the first and last pixel centres "
                                    "(--extent=-3,3,-3,3 when the first is negative)")
    p.add_argument("--combine", choices=COMBINES, default="sum")
    p.add_argument("--normalize", choices=NORMALIZES, default="pdf")
    p.add_argument("--truncate", default="4", help="support radius in sigmas, or 'none' (default 4)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--backend", default="auto", help="auto, cupy, numba or numpy")
    p.add_argument("--cmap", default="inferno", help="PNG colormap (matplotlib's names; 'gray' needs no matplotlib)")
    p.add_argument("--vmin", type=float, help="PNG: value at the bottom of the colormap (default the minimum)")
    p.add_argument("--vmax", type=float, help="PNG: value at the top of the colormap (default the maximum)")
    p.add_argument("--chunks", help="Zarr output: chunk side N in pixels, or RxC (rendered chunk by chunk on Dask)")
    p.add_argument("--scheduler", help="Zarr output: address of a Dask distributed scheduler whose workers render "
                                       "and write the chunks (they must reach the store; default: threads here)")
    p.add_argument("--overwrite", action="store_true", help="Zarr output: replace a store holding another render")
    p.add_argument("--progress", choices=PROGRESS, default="auto",
                   help="progress bar on stderr: always; never; auto (default): a Zarr render always, another "
                        "on a terminal once it has taken a second (a bar splits a render of more than "
                        f"{CHUNK_KERNELS:,} kernels into parts, which can change the last bits of sums)")
    return p


def run(args) -> int:
    """Run ``gaussheat render`` with the arguments of :func:`add_parser`.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        0 once every output is written.

    Raises
    ------
    InputError, ValueError, TypeError, OSError, ImportError
        Bad input or options, an output that cannot be written, a missing extra:
        :func:`gaussheat_gpu.cli.main` reports them on one line with exit status 2.
    """
    outputs = [Path(path) for path in args.output]
    for output in outputs:
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"{output}: unknown output type {output.suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    zarr_output = any(output.suffix.lower() == ".zarr" for output in outputs)
    for option in ("chunks", "scheduler"):
        if getattr(args, option) is not None and not zarr_output:
            raise InputError(f"--{option} applies to a Zarr output (-o map.zarr), not to {', '.join(args.output)}")
    if zarr_output and len(outputs) != 1:  # refused before the table is read
        raise InputError("a Zarr output is written chunk by chunk and cannot be combined with other outputs")
    kernels = read_kernels(args.input)
    shape = _parse_shape(args.shape, kernels)
    extent = _parse_floats(args.extent, 4, "--extent") if args.extent else None
    truncate = None if args.truncate.strip().lower() == "none" else _parse_floats(args.truncate, 1, "--truncate")[0]
    for output in outputs:
        if output.suffix.lower() == ".png" and len(shape) != 2:
            raise InputError(f"{output}: a PNG holds one image; the shape {'x'.join(map(str, shape))} makes "
                             f"{math.prod(shape[:-2])}")
    start = time.perf_counter()
    options = dict(combine=args.combine, normalize=args.normalize, truncate=truncate, extent=extent, dtype=args.dtype,
                   backend=args.backend)
    if zarr_output:
        return _render_zarr(args, outputs, kernels, shape, options, start)
    heat = to_host(render_with_progress(kernels, shape, args.progress, **options))
    write_atomically(outputs, [lambda path, suffix=o.suffix.lower(): _write(path, suffix, heat, args)
                               for o in outputs])
    print(f"wrote {', '.join(map(str, outputs))} ({' x '.join(map(str, shape))}, {args.dtype}, rendered and "
          f"written in {time.perf_counter() - start:.3g} s, max {float(np.max(heat)):.4g})")
    return 0


def _render_zarr(args, outputs, kernels, shape, options, start) -> int:
    """``-o map.zarr --chunks N``: render chunk by chunk into a Zarr store (gaussheat_gpu.dask.to_zarr)."""
    chunks = _parse_chunks(args.chunks, shape, outputs[0])
    try:
        from . import dask as gaussheat_dask
    except ImportError as exc:
        raise InputError(f"{outputs[0]}: Zarr output needs the dask extra (pip install 'gaussheat_gpu[dask]'): {exc}")
    client = _connect(args.scheduler) if args.scheduler else None
    try:
        gaussheat_dask.to_zarr(kernels, shape, str(outputs[0]), chunks=chunks, overwrite=args.overwrite,
                               progress=args.progress != "never", **options)
    finally:
        if client is not None:
            client.close()
    print(f"wrote {outputs[0]} ({' x '.join(map(str, shape))}, {args.dtype}, chunks of "
          f"{' x '.join(map(str, chunks[-2:]))}, {time.perf_counter() - start:.3g} s)")
    return 0


def _parse_chunks(text, shape, output):
    """``--chunks N`` (N x N) or ``RxC`` (or one size per axis of ``shape``) as a chunk shape."""
    sizes = _parse_dims(text, "--chunks", "N, RxC or one size per axis") if text is not None else ()
    if not sizes or min(sizes) <= 0 or len(sizes) not in (1, 2, len(shape)):
        raise InputError(f"{output}: a Zarr output needs --chunks N (a chunk side in pixels, N > 0), RxC or one "
                         f"size per axis of the shape {'x'.join(map(str, shape))}; got {text!r}")
    if len(sizes) == 1:
        sizes = sizes * 2
    return (1,) * (len(shape) - len(sizes)) + sizes


def _connect(address):
    """A ``distributed.Client`` of the scheduler at ``address`` (the default scheduler until closed)."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise InputError(f"--scheduler needs distributed (pip install 'gaussheat_gpu[dask]'): {exc}") from None
    return Client(address)


# -- reading ----------------------------------------------------------------------------------

def read_kernels(path) -> Kernels:
    """Kernels from a CSV, JSON, NPY or NPZ file (no pickles).

    Raises
    ------
    InputError
        The file is malformed: the message gives the file, line and column where known.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".csv": _read_csv, ".json": _read_json, ".npy": _read_npy, ".npz": _read_npz}
    if suffix not in readers:
        raise InputError(f"{path}: unknown input type {suffix!r}; use .csv, .json, .npy or .npz")
    columns, where = readers[suffix](path)
    try:
        return Kernels.from_columns(columns)
    except (ValueError, TypeError) as exc:
        raise InputError(_locate(path, str(exc), where)) from None


def _read_csv(path):
    with open(path, newline="") as f:
        text = f.read()
    columns = _numbers_csv(text)
    if columns is None:  # not a plain table of numbers: the exact parser reads it, or says where it is wrong
        columns = _parse_csv(path, text)
    return columns, dict(csv=text)


def _numbers_csv(text):
    """The columns of a plain CSV (a header of known names, then rows of numbers, no quotes) read by
    NumPy, or None where :func:`_parse_csv` must decide (it accepts a few more spellings of numbers,
    and gives the place of every error). Blank lines are not skipped: the rows must be the lines."""
    if '"' in text or text.count("\r") != text.count("\r\n"):
        return None
    first, _, body = text.partition("\n")
    header = [name.strip() for name in next(csv.reader([first]), [])]
    n_rows = body.count("\n") + (not body.endswith("\n"))
    if not body or not header or not set(header) <= set(FIELDS) | {"sigma"} or len(set(header)) < len(header):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.loadtxt(io.StringIO(body), delimiter=",", comments=None, dtype=np.float64, ndmin=2)
    except (ValueError, Warning):
        return None
    if values.shape != (n_rows, len(header)):
        return None
    return {name: values[:, c] for c, name in enumerate(header)}


def _parse_csv(path, text):
    """The columns of a CSV read cell by cell, or an InputError at the file, line and column that is wrong."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise InputError(f"{path}:1:1: empty file; expected a header naming the columns ({', '.join(FIELDS)})")
    header = [name.strip() for name in rows[0]]
    _check_names(path, header, lambda i: f"1:{_csv_column(rows[0], i)}")
    values = np.empty((len(rows) - 1, len(header)))
    for r, row in enumerate(rows[1:]):
        line = r + 2
        if len(row) != len(header):
            raise InputError(f"{path}:{line}:1: {len(row)} fields, but the header names {len(header)}")
        for c, text in enumerate(row):
            try:
                values[r, c] = float(text)
            except ValueError:
                raise InputError(f"{path}:{line}:{_csv_column(row, c)}: cannot read {text.strip()!r} as a number "
                                 f"(column {header[c]!r})") from None
    return {name: values[:, c] for c, name in enumerate(header)}


def _csv_column(row, index):
    """1-based character column of field ``index`` in a CSV row (commas between plain fields)."""
    return 1 + sum(len(field) + 1 for field in row[:index])


def _read_json(path):
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from None
    if isinstance(data, list):
        if not all(isinstance(item, dict) for item in data):
            raise InputError(f"{path}: a JSON list must hold one object per kernel, e.g. {{\"x\": 1, \"y\": 2, \"sigma\": 3}}")
        names = list(dict.fromkeys(name for item in data for name in item))
        _check_names(path, names, lambda i: None)
        for k, item in enumerate(data):
            missing = [name for name in names if name not in item]
            if missing:
                raise InputError(f"{path}: kernel {k} (entry {k} of the list) has no {', '.join(missing)}")
        columns = {name: [item[name] for item in data] for name in names}
    elif isinstance(data, dict):
        _check_names(path, list(data), lambda i: None)
        columns = data
    else:
        raise InputError(f"{path}: expected a JSON object of columns or a list of kernel objects")
    for name, values in columns.items():
        values = values if isinstance(values, list) else [values]
        for k, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{path}: kernel {k}: {name} = {v!r} is not a number")
    return columns, dict(json=True)


def _read_npy(path):
    array = _load(path, np.load)
    if array.dtype.names:
        return {name: array[name] for name in array.dtype.names}, {}
    if array.ndim != 2 or not 2 < array.shape[1] <= len(FIELDS):
        raise InputError(f"{path}: an unstructured NPY must be an (N, k) array with 3 <= k <= {len(FIELDS)} columns "
                         f"in the order {', '.join(FIELDS)}; got shape {array.shape}")
    return {name: array[:, i] for i, name in enumerate(FIELDS[:array.shape[1]])}, {}


def _read_npz(path):
    with _load(path, np.load) as archive:
        return {name: archive[name] for name in archive.files}, {}


def _load(path, loader):
    try:
        return loader(path, allow_pickle=False)
    except ValueError as exc:  # object arrays (pickles) and malformed headers
        raise InputError(f"{path}: {exc}") from None


def _check_names(path, names, where):
    known = set(FIELDS) | {"sigma"}
    for i, name in enumerate(names):
        place = where(i)
        prefix = f"{path}:{place}" if place else f"{path}"
        if name not in known:
            raise InputError(f"{prefix}: unknown column {name!r}; expected names from {', '.join(FIELDS)} (or sigma)")
        if name in names[:i]:  # a table would keep only one of them
            raise InputError(f"{prefix}: column {name!r} is named twice (columns {names.index(name) + 1} and {i + 1})")


def _locate(path, message, where):
    """Point a Kernels error ("sigma_x[3] = ... (kernel 3)") at its line and column in a CSV."""
    found = re.search(r"^(\w+)\[(\d+)\]", message)
    if found and "csv" in where:  # kernel k is on line k + 2, after the header
        field, k = found.group(1), int(found.group(2))
        rows = csv.reader(io.StringIO(where["csv"], newline=""))
        header = [("sigma_x" if n.strip() == "sigma" else n.strip()) for n in next(rows)]
        column = header.index(field) if field in header else 0
        row = next(itertools.islice(rows, k, None))
        return f"{path}:{k + 2}:{_csv_column(row, column)}: {message}"
    if found:
        return f"{path}: kernel {found.group(2)}: {message}"
    return f"{path}: {message}"


def _parse_floats(text, count, option):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected {count} comma-separated number(s)") from None
    if len(values) != count:
        raise InputError(f"{option} {text!r}: expected {count} comma-separated number(s), got {len(values)}")
    return values


def _parse_shape(text, kernels):
    if text is None:  # the pixel grid that holds every centre (and every image)
        if not len(kernels):
            raise InputError("no kernels: give --shape")
        width = int(math.floor(max(float(kernels.x.max()), 0.0))) + 1
        height = int(math.floor(max(float(kernels.y.max()), 0.0))) + 1
        n_images = int(kernels.image.max()) + 1
        return (height, width) if n_images == 1 else (n_images, height, width)
    dims = _parse_dims(text, "--shape", "HxW or BxHxW, e.g. 512x768")
    if len(dims) not in (2, 3) or min(dims) <= 0:
        raise InputError(f"--shape {text!r}: expected HxW or BxHxW with positive sizes")
    return dims


def _parse_dims(text, option, expected):
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"{option} {text!r}: expected {expected}") from None


# -- rendering --------------------------------------------------------------------------------

def render_with_progress(kernels, shape, progress="auto", *, stream=None, **options):
    """:func:`gaussheat_gpu.render` with a progress bar on ``stream``.

    With a bar, a render of more than ``CHUNK_KERNELS`` kernels runs in parts of that many kernels,
    combined into one output with ``accumulate=True``: ``max`` gives the one call's pixels, ``sum``
    and ``por`` the same up to float rounding (the parts' partial sums can change the last bits),
    and ``count``/``integral`` values are per kernel. Without a bar it is one ``render`` call, bit
    for bit.

    Parameters
    ----------
    kernels : Kernels
        Host kernels.
    shape : tuple of int
        As ``render`` takes it.
    progress : {"auto", "always", "never"}, default "auto"
        ``"always"``: a bar from the start; ``"auto"``: a bar only when ``stream`` is a terminal,
        shown once the render has taken ``PROGRESS_AFTER_S``; ``"never"``: none.
    stream : text file, optional
        Where the bar goes (default ``sys.stderr``).
    **options
        ``combine``, ``normalize``, ``truncate``, ``extent``, ``dtype``, ``backend`` as ``render`` takes them.

    Returns
    -------
    array
        The heatmap, as ``render`` returns it.

    Raises
    ------
    ValueError
        An unknown ``progress``, or what ``render`` raises.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> k = gh.Kernels(x=[3.0, 5.0], y=[2.0, 4.0], sigma_x=[1.0, 2.0])
    >>> heat = render_with_progress(k, (8, 8), "never", backend="numpy")
    >>> bool((heat == gh.render(k, (8, 8), backend="numpy")).all())
    True
    """
    if progress not in PROGRESS:
        raise ValueError(f"progress = {progress!r} is not one of {', '.join(PROGRESS)}")
    stream = stream or sys.stderr
    if progress == "never" or (progress == "auto" and not _is_terminal(stream)):
        return render(kernels, shape, **options)
    n = len(kernels)
    bounds = list(range(0, max(n, 1), CHUNK_KERNELS)) + [n]
    bar = ProgressBar(list(np.diff(bounds)), "rendering", stream, steps="parts", work="kernel",
                      delay=0.0 if progress == "always" else PROGRESS_AFTER_S)
    if len(bounds) == 2:
        heat = render(kernels, shape, **options)
        bar.tick(0)
    else:
        columns = kernels.as_dict()
        truncate = options.pop("truncate", 4.0)
        heat = None
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = Kernels(**{name: values[lo:hi] for name, values in columns.items()})
            t = truncate[lo:hi] if isinstance(truncate, np.ndarray) else truncate
            heat = render(part, shape, truncate=t, out=heat, accumulate=heat is not None, **options)
            bar.tick(i)
    bar.close()
    return heat


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


# -- writing ----------------------------------------------------------------------------------

def write_atomically(paths, writers):
    """Call each ``writer(temporary_path)`` for a file next to its path; once every one has
    succeeded, rename them to ``paths``. Nothing is left behind when a writer fails.
    """
    temporaries = []
    try:
        for path, write in zip(map(Path, paths), writers):
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            os.close(fd)
            temporaries.append(temporary)
            write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        for temporary, path in zip(temporaries, paths):
            os.chmod(temporary, 0o666 & ~umask)  # what open() would have given (mkstemp makes it private)
            os.replace(temporary, path)
    except BaseException:
        for temporary in temporaries:
            if os.path.exists(temporary):
                os.remove(temporary)
        raise


def _write(path, suffix, heat, args):
    if suffix == ".npy":
        with open(path, "wb") as f:
            np.save(f, heat)
    elif suffix == ".png":
        from .plot import to_rgba

        write_png(path, to_rgba(heat, args.cmap, args.vmin, args.vmax))
    else:
        write_tiff(path, heat)


def write_png(path, rgba):
    """Write an ``(H, W, 4)`` uint8 array as an 8-bit RGBA PNG (zlib, no dependency)."""
    height, width = rgba.shape[:2]
    raw = b"".join(b"\x00" + rgba[r].tobytes() for r in range(height))  # filter type 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def write_tiff(path, heat):
    """Write ``(H, W)`` or ``(B, H, W)`` as an uncompressed little-endian float32 TIFF, one page
    per image (baseline TIFF 6.0 with SampleFormat 3, IEEE floating point)."""
    pages = np.asarray(heat, dtype="<f4").reshape(-1, heat.shape[-2], heat.shape[-1])
    height, width = pages.shape[1:]
    page_bytes = height * width * 4
    n_tags = 10
    ifd_bytes = 2 + 12 * n_tags + 4
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", 8))
        offset = 8
        for i, page in enumerate(pages):
            data_offset = offset + ifd_bytes
            next_ifd = data_offset + page_bytes if i + 1 < len(pages) else 0
            tags = [(256, 4, width), (257, 4, height), (258, 3, 32), (259, 3, 1), (262, 3, 1),
                    (273, 4, data_offset), (277, 3, 1), (278, 4, height), (279, 4, page_bytes), (339, 3, 3)]
            f.write(struct.pack("<H", n_tags))
            for tag, kind, value in tags:  # SHORT values sit left-justified in the 4-byte field
                f.write(struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                            else struct.pack("<I", value)))
            f.write(struct.pack("<I", next_ifd))
            f.write(page.tobytes())
            offset = data_offset + page_bytes

