"""``Kernels``: a validated set of 2-D Gaussian kernels."""

from __future__ import annotations

import math

import numpy as np

from ._xp import array_module, first_bad

FIELDS = ("x", "y", "sigma_x", "sigma_y", "theta", "amplitude", "image")
_FLOAT_FIELDS = FIELDS[:-1]


class Kernels:
    """N Gaussian kernels, each with a centre, standard deviations, rotation, amplitude and image.

    Every argument is a scalar or a 1-D array; they broadcast to one length N. Arrays are
    validated once, here, and stored as float64 (``image`` as int64) on the device they came
    from (NumPy arrays on the host, CuPy arrays on their GPU). Host arrays are read-only, so that
    what was validated is what renders; a ``Kernels`` pickles and copies (for worker processes,
    Dask tasks and caches). The range each field supports is in ``docs/semantics.md``.

    Parameters
    ----------
    x, y : float or array_like
        Centres, in the coordinates of ``render``'s ``extent`` (pixel units by default:
        ``x`` is the column, ``y`` the row).
    sigma_x, sigma_y : float or array_like
        Standard deviations along the kernel's own axes, > 0. ``sigma_y=None`` means ``sigma_x``.
    theta : float or array_like, default 0
        Rotation in radians, counter-clockwise from the x axis (x towards y).
    amplitude : float or array_like, default 1
        Multiplies each kernel's value.
    image : int or array_like, default 0
        Index of the image the kernel belongs to, for batched outputs of shape ``(..., H, W)``.

    Raises
    ------
    ValueError
        Lengths that do not broadcast, a NaN or infinite value, ``sigma <= 0``, or a negative,
        non-integral or too large (``>= 2**53``) image index. The message names the argument,
        the kernel index and the value.
    TypeError
        A non-numeric or multi-dimensional argument, or a masked array with masked values.

    Examples
    --------
    >>> import gaussheat_gpu as gh
    >>> k = gh.Kernels(x=[256, 260], y=[256, 250], sigma_x=[20, 40], sigma_y=[20, 80])
    >>> len(k)
    2
    """

    __slots__ = ("_arrays", "_xp", "_bounds", "_extremes")

    def __init__(self, x, y, sigma_x, sigma_y=None, theta=0.0, amplitude=1.0, image=0):
        if sigma_y is None:
            sigma_y = sigma_x
        raw = dict(x=x, y=y, sigma_x=sigma_x, sigma_y=sigma_y, theta=theta, amplitude=amplitude, image=image)
        xp = array_module(*raw.values())
        arrays = {name: _as_1d(name, value, xp) for name, value in raw.items()}
        n = _broadcast_length(arrays)
        out = {}
        bounds = {}
        for name, arr in arrays.items():
            if name == "image":
                arr = _as_image_index(arr, xp)
            else:
                arr = arr.astype(xp.float64, copy=False)
                bounds[name] = _finite_bounds(name, arr, xp)
                if name.startswith("sigma") and bounds[name][0] <= 0:
                    _first_bad(name, arr, arr <= 0, xp, "must be > 0")
            out[name] = xp.broadcast_to(arr, (n,)).copy()  # owned: later edits by the caller can't bypass validation
        self._set(out, xp, bounds)

    def _set(self, arrays, xp, bounds):
        for arr in arrays.values():
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False
        self._arrays = arrays
        self._xp = xp
        self._bounds = bounds
        self._extremes = _extremes(bounds)

    def __reduce__(self):
        return _restore, (self._arrays, self._bounds)

    def __copy__(self):
        return self  # immutable

    def __deepcopy__(self, memo):
        return _restore({k: v.copy() for k, v in self._arrays.items()}, dict(self._bounds))

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_array(cls, array, columns=None):
        """Kernels from an ``(N, k)`` array whose columns are named by ``columns``.

        Parameters
        ----------
        array : array_like, shape (N, k)
        columns : sequence of str, optional
            Names from ``x, y, sigma_x, sigma_y, theta, amplitude, image``; default the first k
            of them in that order (so a 3-column array is ``x, y, sigma``).

        Returns
        -------
        Kernels

        Raises
        ------
        ValueError
            Wrong shape, wrong number of names, or an unknown or repeated name.

        Examples
        --------
        >>> import numpy as np, gaussheat_gpu as gh
        >>> k = gh.Kernels.from_array(np.array([[10.0, 12.0, 2.0], [30.0, 5.0, 3.0]]))
        >>> k.sigma_y.tolist()
        [2.0, 3.0]
        """
        xp = array_module(array)
        array = xp.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"from_array needs a 2-D (N, k) array, got shape {tuple(array.shape)}")
        k = array.shape[1]
        if columns is None:
            if not 2 < k <= len(FIELDS):
                raise ValueError(f"from_array: cannot guess names for {k} columns; pass columns=")
            columns = FIELDS[:k]
        if isinstance(columns, str):
            raise TypeError(f"from_array: columns must be a sequence of names, got the string {columns!r}")
        columns = tuple(columns)
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated:
            raise ValueError(f"from_array: repeated column name(s) {', '.join(map(repr, repeated))} in columns={columns!r}")
        if len(columns) != k:
            raise ValueError(f"from_array: {k} columns in the array but {len(columns)} names in columns={columns!r}")
        return cls.from_columns({name: array[:, i] for i, name in enumerate(columns)})

    @classmethod
    def from_columns(cls, table):
        """Kernels from a mapping of column name to values: a dict, a pandas DataFrame, ...

        Parameters
        ----------
        table : mapping or DataFrame
            Must hold ``x``, ``y`` and ``sigma_x`` (or ``sigma``); may hold the other field names.

        Returns
        -------
        Kernels

        Raises
        ------
        ValueError
            A missing required column or an unknown or repeated one.

        Examples
        --------
        >>> import gaussheat_gpu as gh
        >>> gh.Kernels.from_columns({"x": [1.0, 2.0], "y": [3.0, 4.0], "sigma": 1.5}).sigma_x.tolist()
        [1.5, 1.5]
        """
        if not callable(getattr(table, "keys", None)):
            raise TypeError(f"from_columns needs a mapping of column name to values (a dict or a DataFrame), "
                            f"got {type(table).__name__}; for an (N, k) array use Kernels.from_array")
        names = list(table.keys())
        if len(set(names)) != len(names):
            raise ValueError(f"repeated column names in {names!r}")
        columns = {}
        for name in names:
            field = "sigma_x" if name == "sigma" else name
            if field not in FIELDS:
                raise ValueError(f"unknown column {name!r}; expected names from {', '.join(FIELDS)} (or sigma)")
            if field in columns:
                raise ValueError("give either 'sigma' or 'sigma_x', not both")
            values = table[name]
            columns[field] = values.to_numpy() if hasattr(values, "to_numpy") else values
        missing = [f for f in ("x", "y", "sigma_x") if f not in columns]
        if missing:
            raise ValueError(f"missing column(s) {', '.join(missing)} in {names!r}")
        return cls(**columns)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._arrays["x"].shape[0])

    def __repr__(self) -> str:
        where = "device" if self._xp is not np else "host"
        return f"Kernels(n={len(self)}, on {where})"

    def __getattr__(self, name):
        if name.startswith("_"):  # not a column: also keeps copy/pickle probes from recursing
            raise AttributeError(name)
        try:
            return self._arrays[name]
        except KeyError:
            raise AttributeError(f"Kernels has no column {name!r}; columns: {', '.join(FIELDS)}") from None

    def __setattr__(self, name, value):
        if name not in Kernels.__slots__:
            raise AttributeError(f"Kernels are immutable: build a new one instead of setting {name!r}")
        object.__setattr__(self, name, value)

    @property
    def xp(self):
        """The array module holding the arrays (``numpy`` or ``cupy``)."""
        return self._xp

    def as_dict(self) -> dict:
        """The validated columns as a dict of arrays (read-only on the host)."""
        return dict(self._arrays)

    def extremes(self):
        """What the supported-range test of each render needs, from :meth:`bounds`: ``(x_lo, x_hi,
        y_lo, y_hi, sigma_lo, sigma_hi, |amplitude| max, its largest pdf peak bound)``, or None
        when there are no kernels."""
        return self._extremes

    def bounds(self, name):
        """``(min, max)`` of a float column, kept from validation (range checks at render time then
        cost nothing per kernel).

        Parameters
        ----------
        name : str
            One of ``x, y, sigma_x, sigma_y, theta, amplitude``.

        Returns
        -------
        tuple of float
            ``(min, max)``; ``(inf, -inf)`` when there are no kernels.

        Examples
        --------
        >>> import gaussheat_gpu as gh
        >>> gh.Kernels(x=[3.0, -1.0], y=0.0, sigma_x=[2.0, 0.5]).bounds("sigma_x")
        (0.5, 2.0)
        """
        return self._bounds[name]

    def to(self, xp) -> "Kernels":
        """The same kernels with their arrays on ``xp`` (``numpy`` or ``cupy``); self if already there."""
        if xp is self._xp:
            return self
        new = object.__new__(Kernels)
        if xp is np:
            arrays = {k: self._xp.asnumpy(v) for k, v in self._arrays.items()}
        else:
            arrays = {k: xp.asarray(v) for k, v in self._arrays.items()}
        new._set(arrays, xp, self._bounds)
        return new


def _extremes(bounds):
    (x_lo, x_hi), (y_lo, y_hi) = bounds["x"], bounds["y"]
    if x_lo > x_hi:
        return None
    sx_lo, sy_lo = bounds["sigma_x"][0], bounds["sigma_y"][0]
    peak = max(abs(v) for v in bounds["amplitude"])
    area = 2.0 * math.pi * sx_lo * sy_lo
    return (x_lo, x_hi, y_lo, y_hi, min(sx_lo, sy_lo), max(bounds["sigma_x"][1], bounds["sigma_y"][1]), peak,
            peak / area if area > 0.0 else math.inf)


def _restore(arrays, bounds):
    """Unpickle a :class:`Kernels` (already validated: its bounds come with it)."""
    new = object.__new__(Kernels)
    new._set(dict(arrays), array_module(*arrays.values()), dict(bounds))
    return new


def _as_1d(name, value, xp):
    if isinstance(value, np.ma.MaskedArray):
        if np.ma.getmaskarray(value).any():
            k = int(np.flatnonzero(np.ma.getmaskarray(value))[0])
            raise TypeError(f"{name} is a masked array with {name}[{k}] masked (kernel {k}); drop the masked kernels "
                            f"from every column first (e.g. with a boolean index), or fill them (x.filled(value))")
        value = value.data
    try:
        arr = xp.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers: {exc}") from None
    if arr.ndim > 1:
        raise TypeError(f"{name} must be a scalar or 1-D, got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.reshape(-1) if arr.ndim else arr.reshape(1)


def _broadcast_length(arrays) -> int:
    lengths = {name: int(a.shape[0]) for name, a in arrays.items()}
    n_values = {n for n in lengths.values() if n != 1}
    if len(n_values) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in lengths.items() if n != 1)
        raise ValueError(f"kernel arguments have mismatched lengths ({detail}); each must be a scalar or length N")
    return n_values.pop() if n_values else 1


def _first_bad(name, arr, bad, xp, requirement):
    """``name[k] = value requirement (kernel k)`` for the first kernel where ``bad`` is true."""
    first_bad(arr, bad, xp, requirement, "kernel", name, count=False)


def _finite_bounds(name, arr, xp):
    """``(min, max)`` of ``arr`` as floats; raises naming the first NaN or infinite value."""
    if arr.size == 0:
        return math.inf, -math.inf
    lo, hi = float(arr.min()), float(arr.max())  # NaN propagates through both: two reductions check all
    if not (math.isfinite(lo) and math.isfinite(hi)):
        _first_bad(name, arr, ~xp.isfinite(arr), xp, "is not finite")
    return lo, hi


MAX_IMAGE = 2**53  # image indices are exact in float64 below this, and an output has fewer images


def _as_image_index(arr, xp):
    if arr.dtype.kind == "f":
        arr = arr.astype(xp.float64, copy=False)  # float16 cannot hold the limits compared against
        _finite_bounds("image", arr, xp)
        _first_bad("image", arr, arr != xp.round(arr), xp, "is not an integer")
        _first_bad("image", arr, arr < 0, xp, "must be >= 0")
        _first_bad("image", arr, arr >= MAX_IMAGE, xp, "is too large (image indices must be < 2**53)")
    elif arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        _first_bad("image", arr, arr >= MAX_IMAGE, xp, "is too large (image indices must be < 2**53)")
    arr = arr.astype(xp.int64)
    _first_bad("image", arr, arr < 0, xp, "must be >= 0")
    return arr
