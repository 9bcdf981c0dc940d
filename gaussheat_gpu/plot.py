"""Showing heatmaps: pixel centres where ``render`` put them, and colour-mapped RGBA arrays.

Matplotlib is optional (``pip install 'gaussheat_gpu[plot]'``): :func:`imshow` and named colormaps
need it; ``to_rgba(heat, "gray")`` does not.
"""

from __future__ import annotations

import importlib

import numpy as np

from ._xp import to_host


def pixel_edges(shape, extent=None):
    """Matplotlib's ``extent`` (pixel edges) for an image that ``render`` drew with ``extent``.

    ``render``'s extent gives the coordinates of the first and last pixel CENTRES
    (``numpy.linspace`` semantics); matplotlib's gives the outer edges of the first and last
    pixels, half a pixel further out.

    Parameters
    ----------
    shape : tuple of int
        ``(..., H, W)``.
    extent : (x0, x1, y0, y1), optional
        As given to :func:`gaussheat_gpu.render`; default ``(0, W-1, 0, H-1)``.

    Returns
    -------
    (left, right, bottom, top) : tuple of float
        For ``imshow(..., origin="upper", extent=...)``: row 0 at the top, at ``y0``.

    Examples
    --------
    >>> pixel_edges((3, 5))
    (-0.5, 4.5, 2.5, -0.5)
    >>> pixel_edges((3, 5), (0.0, 1.0, 0.0, 1.0))
    (-0.125, 1.125, 1.25, -0.25)
    """
    height, width = shape[-2], shape[-1]
    x0, x1, y0, y1 = extent if extent is not None else (0.0, width - 1.0, 0.0, height - 1.0)
    dx = (x1 - x0) / (width - 1) if width > 1 else 1.0
    dy = (y1 - y0) / (height - 1) if height > 1 else 1.0
    return (float(x0 - dx / 2), float(x1 + dx / 2), float(y1 + dy / 2), float(y0 - dy / 2))


def imshow(heat, extent=None, ax=None, **kwargs):
    """``matplotlib``'s ``imshow`` with each pixel centred where ``render`` evaluated it.

    Parameters
    ----------
    heat : array (H, W)
        A rendered heatmap (NumPy, CuPy or ``__dlpack__``; copied to the host).
    extent : (x0, x1, y0, y1), optional
        The ``extent`` given to ``render`` (pixel centres). Default: pixel indices.
    ax : matplotlib Axes, optional
        Default the current axes.
    **kwargs
        Passed to ``Axes.imshow`` (``cmap``, ``vmin``, ``vmax``, ``norm``, ...); ``origin`` defaults
        to ``"upper"`` (row 0 at the top, as ``render`` indexes it), ``interpolation`` to
        ``"nearest"``.

    Returns
    -------
    matplotlib.image.AxesImage

    Raises
    ------
    ImportError
        Matplotlib is missing (the message says how to install it).
    ValueError
        ``heat`` is not 2-D.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import gaussheat_gpu as gh
    >>> from gaussheat_gpu.plot import imshow
    >>> heat = gh.render(gh.Kernels(x=0.0, y=0.0, sigma_x=1.0), (50, 60), extent=(-3, 3, -2, 2))
    >>> imshow(heat, extent=(-3, 3, -2, 2)).get_extent()
    [-3.0508474576271185, 3.0508474576271185, 2.0408163265306123, -2.0408163265306123]
    """
    plt = _pyplot()
    heat = _host_2d(heat)
    ax = ax if ax is not None else plt.gca()
    kwargs.setdefault("origin", "upper")
    kwargs.setdefault("interpolation", "nearest")
    edges = pixel_edges(heat.shape, extent)
    if kwargs["origin"] == "lower":
        edges = (edges[0], edges[1], edges[3], edges[2])
    return ax.imshow(heat, extent=edges, **kwargs)


def to_rgba(heat, cmap="inferno", vmin=None, vmax=None):
    """Colour-map a heatmap to an ``(H, W, 4)`` uint8 RGBA array.

    Parameters
    ----------
    heat : array (H, W)
    cmap : str or matplotlib Colormap, default "inferno"
        ``"gray"`` (and ``"grey"``) work without matplotlib.
    vmin, vmax : float, optional
        Values mapped to the ends of the colormap; default the heatmap's min and max. Values
        outside are clipped; NaN becomes transparent.

    Returns
    -------
    ndarray (H, W, 4) uint8

    Raises
    ------
    ValueError
        ``heat`` is not one 2-D image, or ``cmap`` names no matplotlib colormap.
    ImportError
        ``cmap`` names a colormap other than gray and matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> to_rgba(np.array([[0.0, 0.5, 1.0]]), "gray")[0, :, 0].tolist()
    [0, 128, 255]
    """
    heat = _host_2d(heat).astype(np.float64)
    finite = np.isfinite(heat)
    values = heat[finite] if finite.any() else np.zeros(1)
    lo = float(values.min()) if vmin is None else float(vmin)
    hi = float(values.max()) if vmax is None else float(vmax)
    span = hi - lo
    scaled = np.clip((heat - lo) / span, 0.0, 1.0) if span > 0 else np.zeros_like(heat)
    scaled[~finite] = 0.0
    if isinstance(cmap, str) and cmap in ("gray", "grey"):
        level = np.rint(scaled * 255).astype(np.uint8)
        rgba = np.stack([level, level, level, np.full_like(level, 255)], axis=-1)
    else:
        colormap = _colormap(cmap) if isinstance(cmap, str) else cmap
        rgba = colormap(scaled, bytes=True)
    rgba[~finite, 3] = 0
    return rgba


def _host_2d(heat):
    if not isinstance(heat, np.ndarray) and hasattr(heat, "__dlpack__") and not hasattr(heat, "__cuda_array_interface__"):
        heat = np.from_dlpack(heat) if hasattr(heat, "__dlpack_device__") else heat
    heat = to_host(heat)
    if heat.ndim != 2:
        raise ValueError(f"heat must be one 2-D image (H, W), got shape {heat.shape}; pick one image of a batch")
    return heat


def _colormap(name):
    """matplotlib's colormap ``name``, from its registry: pyplot (slow to import, and it may pick a GUI
    backend) stays unimported."""
    matplotlib = _import_matplotlib("matplotlib")
    try:
        return matplotlib.colormaps[name]
    except KeyError as exc:
        raise ValueError(f"cmap = {name!r} is not a matplotlib colormap ({exc.args[0]})") from None


def _pyplot():
    return _import_matplotlib("matplotlib.pyplot")


def _import_matplotlib(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'gaussheat_gpu[plot]'") from None
