"""Hostile random input over every public entry point (bounded example counts for CI).

render, Kernels and its constructors, and the command line are called with values drawn from
NaN, infinities, extremes of float64, subnormals, wrong types and dtypes, odd shapes, extents,
names and ``out`` arrays. Every call must either return a correct result or raise ValueError,
TypeError, MemoryError or BackendUnavailable, leave ``out`` untouched when it raises, and never
warn; the NumPy and Numba backends must make the same decision with the same message and, when
they render, agree with the NumPy float64 reference.
"""

import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import gaussheat_gpu as gh
from gaussheat_gpu import cli
from gaussheat_gpu.kernel_set import FIELDS
from strategies import allowed_error

ALLOWED = (ValueError, TypeError, MemoryError, gh.BackendUnavailable)
# make test runs 150 examples of each; make test-deep (or this variable) many more.
EXAMPLES = int(os.environ.get("GAUSSHEAT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
EXTREMES = [0.0, -0.0, 5e-324, 1e-320, 1e-300, 1e-160, 1e-50, 1e-20, 0.3, 1.0, 7.5, 1e20, 1e50, 1e155, 1e300,
            1.7976931348623157e308, -1e308, -3.0, float("nan"), float("inf"), float("-inf")]

@st.composite
def mostly(draw, valid, hostile, weight=12):
    """``valid`` about ``weight`` times as often as ``hostile`` (shrinking towards ``valid``)."""
    return draw(hostile) if draw(st.sampled_from(range(weight + 1))) == weight else draw(valid)


hostile_float = st.one_of(st.sampled_from(EXTREMES), st.floats(-20, 20), st.floats(allow_nan=True, allow_infinity=True))
odd_scalar = st.one_of(hostile_float, st.integers(-3, 3), st.sampled_from([True, None, "1.0", 2**70, 1 + 2j, np.int8(3),
                                                                           np.uint64(2**64 - 1), np.float16(2.5)]))


@st.composite
def column(draw, n, good):
    if draw(st.integers(0, 3)):  # mostly values that can pass
        return draw(st.lists(good, min_size=n, max_size=n) if draw(st.booleans()) else good)
    kind = draw(st.sampled_from(["scalar", "list", "array", "odd"]))
    if kind == "scalar":
        return draw(odd_scalar)
    if kind == "list":
        return draw(st.lists(hostile_float, min_size=n, max_size=n))
    if kind == "array":
        dtype = draw(st.sampled_from(["float64", "float32", "int64", "int8", "uint64", "float16", "bool"]))
        with np.errstate(all="ignore"):
            return np.array(draw(st.lists(hostile_float, min_size=n, max_size=n)), dtype=np.float64).astype(dtype)
    return draw(st.sampled_from([[[1.0, 2.0]], np.zeros((2, 2)), np.array(["a"] * max(n, 1)), [1.0] * (n + 1),
                                 np.ma.array([1.0] * max(n, 1), mask=[True] + [False] * (max(n, 1) - 1)), object()]))


@st.composite
def kernel_columns(draw):
    n = draw(st.integers(0, 4))
    names = draw(st.sets(st.sampled_from(FIELDS[2:]), max_size=5))
    good = {"image": st.integers(0, 3), "sigma_x": st.floats(0.1, 10), "sigma_y": st.floats(0.1, 10)}
    columns = {"x": draw(column(n, st.floats(-5, 5))), "y": draw(column(n, st.floats(-5, 5)))}
    if "sigma_x" in names or draw(st.integers(0, 5)):
        columns["sigma_x"] = draw(column(n, good["sigma_x"]))
    columns.update({name: draw(column(n, good.get(name, st.floats(-3, 3)))) for name in names})
    return columns


@st.composite
def tame_kernels(draw):
    """Valid kernels near a small image, with extremes drawn among ordinary values."""
    n = draw(st.integers(0, 6))
    near = mostly(st.floats(-3, 14), st.sampled_from([0.0, 1e-30, 1e40, -1e40]))
    sigma = mostly(st.floats(0.01, 30), st.sampled_from([1e-50, 1e-45, 1e-20, 1e-3, 1e20, 1e49]))
    columns = dict(x=draw(st.lists(near, min_size=n, max_size=n)), y=draw(st.lists(near, min_size=n, max_size=n)),
                   sigma_x=draw(st.lists(sigma, min_size=n, max_size=n)), sigma_y=draw(st.lists(sigma, min_size=n, max_size=n)),
                   theta=draw(st.lists(st.one_of(st.just(0.0), st.floats(-7, 7), st.just(1e300)), min_size=n, max_size=n)),
                   amplitude=draw(st.lists(mostly(st.floats(-2, 2), st.sampled_from([0.0, 1e-37, 1e30, 1e300])),
                                           min_size=n, max_size=n)),
                   image=draw(st.lists(mostly(st.just(0), st.integers(0, 2)), min_size=n, max_size=n)))
    return gh.Kernels(**columns)


shapes = mostly(
    st.one_of(st.tuples(st.integers(1, 9), st.integers(1, 9)),
              st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7))),
    st.sampled_from([(0, 4), (4, -1), (4,), 5, (2**62, 2**62), (2**63, 3), (3.0, 4), ("a", 4), (True, 4), None,
                     (1, 1), (2**40, 2**40, 1, 1)]), weight=8)
extents = mostly(st.one_of(st.none(), st.tuples(*[st.floats(-20, 20)] * 4)),
                 st.one_of(st.tuples(hostile_float, hostile_float, hostile_float, hostile_float),
                           st.sampled_from([(0, 1, 0), "abcd", (0, 1e-310, 0, 1), (0, 9e-100, 0, 7e-100)])))
names = {
    "combine": mostly(st.sampled_from(["sum", "max", "por"]), st.sampled_from(["SUM", "avg", ["sum"], None, 3])),
    "normalize": mostly(st.sampled_from(["pdf", "peak", "integral", "count"]),
                        st.sampled_from(["Pdf", "area", ("pdf",), None])),
    "truncate": mostly(st.one_of(st.none(), st.floats(0.1, 6)),
                       st.one_of(hostile_float, st.sampled_from(["4", True, np.float32(2.0), np.array([1.0]), 1e-300]))),
    "dtype": mostly(st.sampled_from([None, None, "float32", "float64", np.float64]),
                    st.sampled_from(["int32", "f2", ">f4", "complex128", "banana", 3])),
}


@st.composite
def out_arrays(draw, shape):
    if draw(st.booleans()) or not isinstance(shape, tuple) or not all(type(s) is int and 0 < s < 50 for s in shape):
        return None
    dtype = draw(mostly(st.sampled_from(["float32", "float64"]), st.sampled_from(["int32", "bool", "float16", ">f8",
                                                                                   "complex64"])))
    wrong = draw(mostly(st.none(), st.sampled_from(["shape", "layout", "readonly", "list"])))
    out = np.full(shape, 7, dtype=dtype)
    if wrong == "shape":
        out = np.full((*shape[:-1], shape[-1] + 1), 7, dtype=dtype)
    elif wrong == "layout" and len(shape) >= 2 and shape[-1] > 1 and shape[-2] > 1:
        out = np.full(shape[::-1], 7, dtype=dtype).T
    elif wrong == "readonly":
        out.flags.writeable = False
    elif wrong == "list":
        out = out.tolist()
    return out


def _copy_like(array):
    """A copy with the same layout and flags."""
    copy = np.array(array, order="K")
    copy.flags.writeable = array.flags.writeable
    return copy


def attempt(call):
    try:
        return call(), None
    except ALLOWED as exc:
        return None, exc


@FUZZ
@given(data=st.data())
def test_render_never_crashes_warns_or_writes_on_failure(data):
    draw = data.draw
    kernels = draw(mostly(tame_kernels(), st.sampled_from([[(1, 2, 3)], None, {"x": [1.0], "y": [1.0]}]), weight=10))
    if isinstance(kernels, gh.Kernels):
        note(f"kernels: {({k: v.tolist() for k, v in kernels.as_dict().items()})}")
    shape = draw(shapes)
    options = {name: draw(strategy) for name, strategy in names.items() if draw(st.booleans())}
    if options.get("combine") == "por":
        options["normalize"] = "peak"
        kernels = draw(st.just(gh.Kernels(**{**kernels.as_dict(), "amplitude": np.clip(kernels.amplitude, 0, 1)}))
                       if isinstance(kernels, gh.Kernels) else st.just(kernels))
    options["extent"] = draw(extents)
    accumulate = draw(mostly(st.just(False), st.sampled_from([True, np.bool_(True), "yes", 1, None]), weight=3))
    results = {}
    drawn_out = draw(out_arrays(shape))
    for backend in ("numpy", "numba"):
        out = drawn_out if not isinstance(drawn_out, np.ndarray) else _copy_like(drawn_out)
        before = None if out is None or isinstance(out, list) else out.copy()
        result, error = attempt(lambda: gh.render(kernels, shape, backend=backend, out=out, accumulate=accumulate,
                                                  **options))
        if error is not None:
            if before is not None:
                assert np.array_equal(out, before, equal_nan=True), "out written before an error"
        else:
            assert result.shape == tuple(shape) and result.dtype in (np.float32, np.float64)
        results[backend] = (result, error, out, before)
    (a, error_a, *_), (b, error_b, *_) = results["numpy"], results["numba"]
    event("rendered" if error_a is None else f"refused: {type(error_a).__name__}: {str(error_a)[:40]}")
    if error_a is not None or error_b is not None:
        # Both refuse, or both render; only the memory estimates may differ between backends.
        assert (error_a is None) == (error_b is None) or isinstance(error_a or error_b, MemoryError), (error_a, error_b)
        if error_a is not None and error_b is not None and not isinstance(error_a, MemoryError):
            assert type(error_a) is type(error_b) and str(error_a) == str(error_b).replace("numba", "numpy")
        return
    expected = gh.render(kernels, shape, backend="numpy", dtype="float64", **{k: v for k, v in options.items() if k != "dtype"},
                         out=None if not accumulate else results["numpy"][3].astype(np.float64), accumulate=accumulate)
    if not np.isfinite(expected).all():
        assert np.abs(kernels.amplitude).max() > 1e29  # only sums of huge amplitudes overflow
        return
    for result in (a, b):
        assert np.isfinite(result).all()
        err = np.abs(result.astype(np.float64) - expected).max() if expected.size else 0.0
        # Subnormal outputs may be flushed to 0 (the Numba backend does, for speed).
        assert err <= max(allowed_error(expected, result.dtype), np.finfo(result.dtype).tiny), err


@FUZZ
@given(columns=kernel_columns(), constructor=st.sampled_from(["init", "from_columns", "from_array"]))
def test_kernels_constructors_validate_or_refuse(columns, constructor):
    if constructor == "init":
        call = lambda: gh.Kernels(**columns)  # noqa: E731
    elif constructor == "from_columns":
        call = lambda: gh.Kernels.from_columns(columns)  # noqa: E731
    else:
        def call():
            names = list(columns)
            return gh.Kernels.from_array(np.column_stack([np.broadcast_to(np.asarray(columns[c], dtype=np.float64), (2,))
                                                          for c in names]), columns=names)
    kernels, error = attempt(call)
    event("built" if error is None else f"refused: {type(error).__name__}")
    if error is not None:
        return
    n = len(kernels)
    for name, values in kernels.as_dict().items():
        assert values.shape == (n,) and not values.flags.writeable
        assert values.dtype == (np.int64 if name == "image" else np.float64)
        assert np.isfinite(values).all()
    assert (kernels.sigma_x > 0).all() and (kernels.sigma_y > 0).all() and (kernels.image >= 0).all()
    copy = pickle.loads(pickle.dumps(kernels))
    assert all(np.array_equal(copy.as_dict()[k], v) for k, v in kernels.as_dict().items())


@settings(max_examples=max(25, EXAMPLES // 6), deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=st.lists(st.sampled_from(["info", "demo", "--repeat", "0", "-1", "x", "--output", "/no/such/dir/a.png",
                                      "--help", "paint", "--gpu", ""]), max_size=4))
def test_cli_exits_with_a_status_never_a_traceback(argv, capsys, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cli"))  # "--output -1" is a file name too
    if "demo" in argv and not any(bad in argv for bad in ("0", "-1", "x", "/no/such/dir/a.png", "paint", "--gpu", "")):
        argv = [*argv, "--output", "/no/such/dir/a.png"]  # keep the demo from timing: fail on the output
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
        status = exc.code
    assert status in (0, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err


# -- the target helpers, Dask rendering and ``gaussheat render`` ----------------------------------

SMALL = settings(max_examples=max(40, EXAMPLES // 4), deadline=None, suppress_health_check=list(HealthCheck))
small_size = mostly(st.tuples(st.integers(2, 12), st.integers(2, 12)),
                    st.sampled_from([(0, 4), (4, -1), (4,), (2.5, 3), "ab", None, (2**62, 2**62)]))
# The helpers' own range checks are their module's: here NaN, zeros and negatives only, not
# infinities or float64's extremes (inf corners or 1e155 sigmas still warn inside them).
plain_bad = st.sampled_from([float("nan"), 0.0, -1.0])
coordinate = mostly(st.floats(-5, 20), plain_bad)


def check_finite_result(result):
    arrays = result if isinstance(result, tuple) else (result,)
    for array in arrays:
        assert np.isfinite(np.asarray(array, dtype=np.float64)).all()


@SMALL
@given(data=st.data())
def test_target_helpers_return_finite_maps_or_refuse(data):
    from gaussheat_gpu import targets

    draw = data.draw
    backend = draw(st.sampled_from(["numpy", "numba"]))
    which = draw(st.sampled_from(["keypoints", "centers", "density"]))
    n = draw(st.integers(0, 4))
    size = draw(small_size)
    if which == "keypoints":
        keypoints = np.array(draw(st.lists(coordinate, min_size=n * 3 * 2, max_size=n * 3 * 2))).reshape(n, 3, 2)
        call = lambda: targets.keypoint_heatmaps(  # noqa: E731
            keypoints, size, draw(mostly(st.floats(0.5, 4), plain_bad)),
            convention=draw(mostly(st.sampled_from(["msra", "udp", "dark", "exact"]), st.sampled_from(["x", None]))),
            visible=draw(st.one_of(st.none(), st.just(np.array(draw(st.lists(st.sampled_from([0.0, 1.0, np.nan]),
                                                                              min_size=n * 3, max_size=n * 3))).reshape(n, 3)))),
            backend=backend)
    elif which == "centers":
        corners = np.array(draw(st.lists(coordinate, min_size=n * 2, max_size=n * 2))).reshape(n, 2)
        boxes = np.hstack([corners, corners + np.array(draw(st.lists(mostly(st.floats(0.5, 10), plain_bad),
                                                                     min_size=n * 2, max_size=n * 2))).reshape(n, 2)])
        labels = np.array(draw(st.lists(mostly(st.integers(0, 2), st.integers(-2, 9)), min_size=n, max_size=n)), dtype=int)
        call = lambda: targets.center_heatmaps(boxes, labels, draw(mostly(st.integers(1, 3), st.integers(-1, 0))), size,  # noqa: E731
                                               backend=backend)
    else:
        points = np.array(draw(st.lists(coordinate, min_size=n * 2, max_size=n * 2))).reshape(n, 2)
        call = lambda: targets.density_map(  # noqa: E731
            points, size, sigma=draw(mostly(st.one_of(st.floats(0.5, 5), st.just("adaptive")), plain_bad)),
            border=draw(mostly(st.sampled_from(["count", "constant", "reflect"]), st.just("wrap"))), backend=backend)
    result, error = attempt(call)
    event(f"{which}: " + ("rendered" if error is None else f"refused: {type(error).__name__}"))
    if error is None:
        check_finite_result(result)


@SMALL
@given(kernels=tame_kernels(), data=st.data())
def test_dask_render_matches_render_or_refuses(kernels, data):
    pytest.importorskip("dask")
    from gaussheat_gpu import dask as gh_dask

    draw = data.draw
    note(f"kernels: {({k: v.tolist() for k, v in kernels.as_dict().items()})}")
    shape = draw(st.one_of(st.tuples(st.integers(1, 12), st.integers(1, 12)),
                           st.tuples(st.just(3), st.integers(1, 8), st.integers(1, 8))))
    chunks = draw(mostly(st.sampled_from([4, 5, (1, 3, 4), "auto"]), st.sampled_from(["x", (2.5, 2)])))
    options = dict(normalize=draw(st.sampled_from(["pdf", "peak", "count", "integral"])),
                   truncate=draw(st.sampled_from([None, 2.0, 4.0])), dtype="float64")
    if isinstance(chunks, tuple) and len(chunks) != len(shape):
        chunks = 4
    lazy, error = attempt(lambda: gh_dask.render(kernels, shape, chunks=chunks, backend="numpy", **options))
    expected, expected_error = attempt(lambda: gh.render(kernels, shape, backend="numpy", **options))
    event("rendered" if error is None else f"refused: {type(error).__name__}")
    if error is not None:
        if expected_error is not None:
            assert type(error) is type(expected_error)
        return
    assert expected_error is None, expected_error
    result = lazy.compute(scheduler="synchronous")
    # Rounding is relative to the terms summed, not to a sum they cancel in: scale by sum |v|.
    magnitude = gh.render(gh.Kernels(**{**kernels.as_dict(), "amplitude": np.abs(kernels.amplitude)}), shape,
                          backend="numpy", **options)
    assert np.abs(result - expected).max(initial=0.0) <= 1e-12 * max(magnitude.max(initial=0.0), 1e-300)


@settings(max_examples=max(20, EXAMPLES // 8), deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(st.lists(st.sampled_from(["1", "2.5", "-3", "nan", "inf", "1e400", "x", "", "0", "1e-300"]),
                              min_size=2, max_size=4), max_size=4),
       header=st.sampled_from(["x,y,sigma", "x,y,sigma,amplitude", "x,y", "a,b,c", "x,y,sigma,x", ""]),
       shape=st.sampled_from(["8x10", "2x8x10", "0x4", "x", "99999999999x99999999999"]),
       suffix=st.sampled_from([".npy", ".png", ".txt"]))
def test_cli_render_exits_cleanly_on_any_table(rows, header, shape, suffix, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("cli")
    table = folder / "kernels.csv"
    table.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")
    status = cli.main(["render", str(table), "-o", str(folder / f"heat{suffix}"), "--shape", shape,
                       "--backend", "numpy", "--progress", "never"])
    err = capsys.readouterr().err
    assert status in (0, 2) and "Traceback" not in err
    event("written" if status == 0 else "refused")
    if status == 0 and suffix == ".npy":
        assert np.isfinite(np.load(folder / "heat.npy")).all()
