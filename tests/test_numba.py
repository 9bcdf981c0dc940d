"""Numba-specific tests: the kernels' Python bodies (JIT disabled), the dense rank-K path, ``out=`` and
``accumulate``, row bands, batches and reversed extents, against the NumPy float64 reference.

The cross-backend equality suite (tests/test_equality.py) covers random inputs in every mode; these
tests aim at the paths that only the Numba backend has.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gaussheat_gpu as gh

pytest.importorskip("numba")
from gaussheat_gpu.backends import numba as numba_backend  # noqa: E402
from gaussheat_gpu.backends.numba import dense, rotated, tiles  # noqa: E402

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
ROOT = Path(__file__).resolve().parents[1]


def reference(kernels, shape, **options):
    return gh.render(kernels, shape, backend="numpy", dtype="float64", **options)


def relative_error(actual, expected):
    scale = np.abs(expected).max()
    assert scale > 0, "the case renders nothing: it cannot tell right from wrong"
    return np.abs(np.asarray(actual, dtype=np.float64) - expected).max() / scale


def assert_close(actual, expected, dtype):
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape
    assert relative_error(actual, expected) <= TOLERANCE[dtype]
    assert not actual[expected == 0].any(), "nonzero pixel where the reference has none"


def mixed_kernels(n, width, height, rng, rotated=True, n_images=1, sigma=(0.5, 12.0)):
    return gh.Kernels(
        x=rng.uniform(-10, width + 10, n), y=rng.uniform(-10, height + 10, n),
        sigma_x=rng.uniform(*sigma, n), sigma_y=rng.uniform(*sigma, n),
        theta=rng.uniform(-np.pi, np.pi, n) if rotated else 0.0,
        amplitude=rng.uniform(0.2, 1.0, n), image=rng.integers(0, n_images, n))


def test_registered_and_available():
    assert numba_backend.unavailable_reason() is None
    assert numba_backend.xp is np
    assert "numba" in gh.available_backends()
    assert numba_backend.free_memory() > 0


# -- (1) the kernels' Python bodies, JIT disabled -------------------------------------------------

NO_JIT_SCRIPT = textwrap.dedent("""
    import json, numpy as np, gaussheat_gpu as gh
    from gaussheat_gpu.backends.numba import rotated as numba_rotated
    rng = np.random.default_rng(11)
    errors = {}
    def check(name, kernels, shape, dtype, **options):
        ref = gh.render(kernels, shape, backend="numpy", dtype="float64", **options)
        got = gh.render(kernels, shape, backend="numba", dtype=dtype, **options)
        start = rng.uniform(0, 1, shape)
        ref_acc = start.copy()
        gh.render(kernels, shape, backend="numpy", out=ref_acc, accumulate=True, **options)
        out = start.astype(dtype)
        gh.render(kernels, shape, backend="numba", out=out, accumulate=True, **options)
        scale = np.abs(ref).max()
        errors[name] = [float(np.abs(got - ref).max() / scale),
                        float(np.abs(out - ref_acc).max() / np.abs(ref_acc).max()),
                        bool(got[ref == 0].any()), float(scale)]
    shape = (2, 70, 23)  # two images; 70 rows cross a band edge
    for combine in ("sum", "max", "por"):
        for normalize in ("pdf", "peak", "integral", "count"):
            for rotated in (False, True):
                if rotated and normalize == "integral":
                    continue
                n = 5
                kernels = gh.Kernels(rng.uniform(-3, 26, n), rng.uniform(-3, 73, n), rng.uniform(0.6, 6, n),
                                     rng.uniform(0.6, 6, n), rng.uniform(-3, 3, n) if rotated else 0.0,
                                     rng.uniform(0.1, 0.9, n), rng.integers(0, 2, n))
                for truncate in (None, 2.5):
                    for dtype in ("float32", "float64"):
                        check(f"{combine}-{normalize}-{'rot' if rotated else 'axis'}-{truncate}-{dtype}",
                              kernels, shape, dtype, combine=combine, normalize=normalize, truncate=truncate)
    # One image: a small plan lists every kernel in every band (tiles.every_band), and the
    # truncated kernels miss some of the two bands.
    for combine in ("sum", "max", "por"):
        single = gh.Kernels(rng.uniform(-3, 26, 5), rng.uniform(-3, 73, 5), rng.uniform(0.6, 6, 5),
                            rng.uniform(0.6, 6, 5), 0.0, rng.uniform(0.1, 0.9, 5))
        for dtype in ("float32", "float64"):
            check(f"{combine}-peak-one-image-2.5-{dtype}", single, shape[1:], dtype, combine=combine,
                  normalize="peak", truncate=2.5)
    # Axis-aligned and rotated kernels in one plan (the band renderer's third specialisation).
    for combine in ("sum", "max", "por"):
        mixed = gh.Kernels(rng.uniform(-3, 26, 6), rng.uniform(-3, 73, 6), rng.uniform(0.6, 6, 6),
                           rng.uniform(0.6, 6, 6), [0.0, 0.0, 0.0, 0.5, -1.0, 2.0], rng.uniform(0.1, 0.9, 6),
                           rng.integers(0, 2, 6))
        for dtype in ("float32", "float64"):
            check(f"{combine}-pdf-mixed-3.0-{dtype}", mixed, shape, dtype, combine=combine, truncate=3.0)
    # A narrow rotated kernel over a whole image: its corners are too far out for the recurrences.
    narrow = gh.Kernels(x=[20.0], y=[15.0], sigma_x=[0.7], sigma_y=[3.0], theta=[0.6])
    from gaussheat_gpu.planning import make_grid, make_plan
    plan = make_plan(narrow, make_grid((30, 40)), truncate=None)
    assert not numba_rotated.rotated_is_safe(plan.params[0], *plan.boxes[0, :4])
    for normalize in ("pdf", "count"):
        for dtype in ("float32", "float64"):
            check(f"exact-{normalize}-{dtype}", narrow, (30, 40), dtype, normalize=normalize, truncate=None)
    # The dense path (dense.dense_product): large image, few wide axis-aligned kernels, sum, exact.
    wide = gh.Kernels(x=[300.0, 700.0], y=[500.0, 200.0], sigma_x=[150.0, 260.0], sigma_y=[220.0, 90.0])
    for normalize in ("pdf", "count"):
        for dtype in ("float32", "float64"):
            ref = gh.render(wide, (1024, 1024), backend="numpy", dtype="float64", normalize=normalize, truncate=None)
            got = gh.render(wide, (1024, 1024), backend="numba", dtype=dtype, normalize=normalize, truncate=None)
            errors[f"dense-{normalize}-{dtype}"] = [float(np.abs(got - ref).max() / np.abs(ref).max()), 0.0,
                                                    False, float(np.abs(ref).max())]
    print(json.dumps(errors))
""")


def test_kernel_bodies_without_jit_match_reference():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", NO_JIT_SCRIPT], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    # 3 combines x 7 (normalize, rotation) pairs x 2 truncations x 2 dtypes, 3 x 2 one-image, 3 x 2
    # mixed, 4 exact, 4 dense.
    assert len(errors) == 3 * 7 * 2 * 2 + 3 * 2 + 3 * 2 + 4 + 4
    for name, (error, accumulate_error, outside, scale) in errors.items():
        dtype = name.rsplit("-", 1)[1]
        assert scale > 0, name
        assert error <= TOLERANCE[dtype], (name, error)
        assert accumulate_error <= TOLERANCE[dtype], (name, accumulate_error)
        assert not outside, f"{name}: nonzero pixel outside every support"


def test_small_plans_listed_in_every_band_render_the_bits_of_binned_lists(monkeypatch):
    # A small plan of one image lists every kernel in every band (tiles.every_band) and the renderer
    # skips the bands a kernel's box misses: the same operations in the same order as with the
    # binned lists (tiles.bin_kernels), so the same bits, for every mode and kind of kernel.
    rng = np.random.default_rng(23)
    listed = []
    every_band, limit = tiles.every_band, tiles.EVERY_BAND_ENTRIES
    monkeypatch.setattr(tiles, "every_band", lambda *sizes: listed.append(sizes) or every_band(*sizes))
    for case in range(40):
        n = int(rng.integers(1, 12))
        height, width = int(rng.integers(1, 300)), int(rng.integers(1, 120))
        kernels = mixed_kernels(n, width, height, rng, rotated=case % 3 == 0, sigma=(0.3, 40.0))
        combine = ("sum", "max", "por")[case % 3]
        normalize = ("peak", "pdf", "count", "integral")[case % 4] if combine != "por" else "peak"
        if normalize == "integral" and case % 3 == 0:
            normalize = "pdf"
        options = dict(combine=combine, normalize=normalize, truncate=None if case % 5 == 0 else 2.0,
                       dtype=("float32", "float64")[case % 2], backend="numba")
        start = rng.uniform(0, 0.5, (height, width))
        images = []
        for entries in (limit, 0):
            monkeypatch.setattr(tiles, "EVERY_BAND_ENTRIES", entries)
            out = start.astype(options["dtype"])
            gh.render(kernels, (height, width), out=out, accumulate=case % 4 == 1, **options)
            images.append(out)
        np.testing.assert_array_equal(images[0], images[1], err_msg=f"case {case}: {options}")
    assert len(listed) == 40  # every case took the every-band lists once


@pytest.mark.parametrize("n_images", [1, 2])
def test_call_bytes_counts_the_band_lists_the_render_makes(monkeypatch, n_images):
    # One image of few kernels: every kernel listed in every band (tiles.every_band), and the exact
    # figure is what the arrays handed to the band pass hold plus each thread's row scratch; two
    # images: the binned lists, and bin_kernels' own temporaries on top. The bound is at least that.
    import numba

    from gaussheat_gpu.planning import make_grid, make_plan

    kernels = mixed_kernels(9, 90, 300, np.random.default_rng(4), n_images=n_images)
    plan = make_plan(kernels, make_grid((n_images, 300, 90)), truncate=3.0, dtype=np.float32)
    taken = []
    render_bands = tiles.render_bands
    monkeypatch.setattr(tiles, "render_bands", lambda *args: taken.append(args) or render_bands(*args))
    numba_backend.render(plan, np.zeros((n_images, 300, 90), np.float32))
    offsets, kernel_ids, col_offsets, column_factors, info = taken[0][4:9]
    held = sum(a.nbytes for a in (offsets, kernel_ids, col_offsets, column_factors, info))
    assert (kernel_ids.size == 9 * (offsets.size - 1)) == (n_images == 1)
    exact = numba_backend.call_bytes(plan, exact=True)
    rows = numba.get_num_threads() * 24 * 90
    assert (exact == held + rows) if n_images == 1 else (held + rows < exact < 2 * (held + rows))
    assert exact <= numba_backend.call_bytes(plan)


# -- (2) the dense path ----------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", ["pdf", "peak", "integral", "count"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_path_matches_reference(monkeypatch, normalize, dtype):
    calls = []
    real = dense.render_dense
    monkeypatch.setattr(dense, "render_dense", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(3)
    kernels = gh.Kernels(x=rng.uniform(0, 1023, 6), y=rng.uniform(0, 1023, 6), sigma_x=rng.uniform(60, 200, 6),
                         sigma_y=rng.uniform(60, 200, 6), amplitude=rng.uniform(0.5, 2, 6))
    options = dict(normalize=normalize, truncate=None, extent=(0.0, 1023.0, 1023.0, 0.0))
    actual = gh.render(kernels, (1024, 1024), backend="numba", dtype=dtype, **options)
    assert calls, "the dense path was not taken"
    assert_close(actual, reference(kernels, (1024, 1024), **options), dtype)


def test_dense_path_not_taken_where_it_does_not_apply(monkeypatch):
    monkeypatch.setattr(dense, "render_dense", lambda *a: pytest.fail("dense path taken"))
    wide = gh.Kernels(x=[500.0], y=[500.0], sigma_x=[300.0], sigma_y=[200.0])
    rotated = gh.Kernels(x=[500.0], y=[500.0], sigma_x=[300.0], sigma_y=[200.0], theta=[0.3])
    for kernels, options in [(wide, dict(combine="max")), (rotated, {}), (wide, dict(truncate=0.5))]:
        options = dict(dict(truncate=None), **options)
        actual = gh.render(kernels, (1024, 1024), backend="numba", dtype="float64", **options)
        assert_close(actual, reference(kernels, (1024, 1024), **options), "float64")


# -- (3) out= and accumulate -------------------------------------------------------------------------

@pytest.mark.parametrize("combine", ["sum", "max", "por"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_accumulate_combines_with_out(combine, dtype):
    rng = np.random.default_rng(5)
    shape = (150, 90)
    kernels = mixed_kernels(40, 90, 150, rng)
    start = rng.uniform(0, 1, shape)
    expected = start.copy()
    gh.render(kernels, shape, backend="numpy", combine=combine, out=expected, accumulate=True)
    out = start.astype(dtype)
    result = gh.render(kernels, shape, backend="numba", combine=combine, out=out, accumulate=True)
    assert result is out
    assert relative_error(out, expected) <= TOLERANCE[dtype]
    # Pixels no kernel reaches keep their value exactly.
    untouched = expected == start
    assert untouched.any() and np.array_equal(out[untouched], start.astype(dtype)[untouched])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_out_without_accumulate_overwrites_every_pixel(dtype):
    rng = np.random.default_rng(6)
    kernels = mixed_kernels(30, 64, 200, rng, n_images=3)
    out = np.full((3, 200, 64), np.nan, dtype=dtype)
    gh.render(kernels, (3, 200, 64), backend="numba", out=out)
    assert not np.isnan(out).any()
    assert_close(out, reference(kernels, (3, 200, 64)), dtype)


def test_no_kernels_clears_or_keeps_out():
    out = np.full((70, 10), 3.0, dtype=np.float32)
    gh.render(gh.Kernels(x=[], y=[], sigma_x=[]), (70, 10), backend="numba", out=out, accumulate=True)
    assert (out == 3.0).all()
    gh.render(gh.Kernels(x=[], y=[], sigma_x=[]), (70, 10), backend="numba", out=out)
    assert not out.any()


# -- (4) bands, batches, extents ------------------------------------------------------------------------

@pytest.mark.parametrize("band_height", [64, 128, 256])
@pytest.mark.parametrize("normalize", ["pdf", "peak", "count", "integral"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_spanning_many_bands(monkeypatch, band_height, normalize, dtype):
    # Bands of every height the backend picks; tall kernels cross several band edges, short ones
    # sit on them.
    monkeypatch.setattr(numba_backend, "_band_height", lambda n_images, height: band_height)
    height, width = 500 if band_height == 64 else 1100, 60
    rng = np.random.default_rng(7)
    band_edges = np.arange(1, height // band_height + 1) * band_height - 0.5
    tall = gh.Kernels(x=rng.uniform(0, width, 6), y=rng.uniform(0, height, 6), sigma_x=rng.uniform(2, 8, 6),
                      sigma_y=rng.uniform(40, 120, 6), theta=0.0 if normalize == "integral" else rng.uniform(-0.2, 0.2, 6))
    short = gh.Kernels(x=rng.uniform(0, width, band_edges.size), y=band_edges, sigma_x=1.5,
                       sigma_y=rng.uniform(0.5, 3, band_edges.size), theta=0.0 if normalize == "integral" else 1.0)
    kernels = gh.Kernels(**{name: np.concatenate([getattr(tall, name), getattr(short, name)])
                            for name in ("x", "y", "sigma_x", "sigma_y", "theta", "amplitude", "image")})
    for truncate in (None, 3.0):
        options = dict(normalize=normalize, truncate=truncate)
        actual = gh.render(kernels, (height, width), backend="numba", dtype=dtype, **options)
        assert_close(actual, reference(kernels, (height, width), **options), dtype)


def test_band_height_is_the_tallest_that_splits_evenly(monkeypatch):
    monkeypatch.setattr(numba_backend.numba, "get_num_threads", lambda: 2)
    assert numba_backend._band_height(1, 1024) == 256  # W6: 4 tiles, 2 a thread
    assert numba_backend._band_height(1, 1280) == 128  # 5 tiles of 256 rows: 3 for one thread
    assert numba_backend._band_height(64, 256) == 256  # W4: one band per image
    monkeypatch.setattr(numba_backend.numba, "get_num_threads", lambda: 16)
    assert numba_backend._band_height(1, 1024) == 64  # 16 tiles for 16 threads
    assert numba_backend._band_height(64, 256) == 256
    monkeypatch.setattr(numba_backend.numba, "get_num_threads", lambda: pytest.fail("thread count asked"))
    assert numba_backend._band_height(1, 768) == numba_backend.BAND_HEIGHT  # W5


@pytest.mark.parametrize("combine", ["sum", "max", "por"])
@pytest.mark.parametrize("rotated", [False, True])
def test_batches_with_image_indices(combine, rotated):
    rng = np.random.default_rng(8)
    shape = (3, 40, 50)
    kernels = mixed_kernels(45, 50, 40, rng, rotated=rotated, n_images=3, sigma=(0.5, 6.0))
    for dtype in ("float32", "float64"):
        actual = gh.render(kernels, shape, backend="numba", dtype=dtype, combine=combine)
        expected = reference(kernels, shape, combine=combine)
        assert_close(actual, expected, dtype)
    # Each image only holds its own kernels.
    only_first = gh.Kernels(x=[25.0], y=[20.0], sigma_x=[3.0], image=[1])
    image = gh.render(only_first, shape, backend="numba")
    assert image[1].max() > 0 and not image[0].any() and not image[2].any()


@pytest.mark.parametrize("extent", [(3.0, -3.0, -2.0, 2.0), (-3.0, 3.0, 2.0, -2.0), (10.0, 0.0, 8.0, 0.0)])
@pytest.mark.parametrize("normalize", ["pdf", "integral", "count"])
def test_reversed_extents(extent, normalize):
    rng = np.random.default_rng(9)
    n = 8
    kernels = gh.Kernels(x=rng.uniform(-3, 10, n), y=rng.uniform(-2, 8, n), sigma_x=rng.uniform(0.3, 2, n),
                         sigma_y=rng.uniform(0.3, 2, n), theta=0.0 if normalize == "integral" else rng.uniform(-3, 3, n))
    options = dict(normalize=normalize, extent=extent)
    for dtype in ("float32", "float64"):
        actual = gh.render(kernels, (90, 70), backend="numba", dtype=dtype, **options)
        assert_close(actual, reference(kernels, (90, 70), **options), dtype)


def test_float32_output_has_no_subnormals():
    # Exact (untruncated) tails reach far below float32's smallest normal number; they must be 0.
    kernels = gh.Kernels(x=[100.0, 30.0], y=[80.0, 150.0], sigma_x=[3.0, 2.0], sigma_y=[5.0, 4.0], theta=[0.0, 0.7])
    for combine in ("sum", "max", "por"):
        out = gh.render(kernels, (200, 200), backend="numba", combine=combine, normalize="peak", truncate=None)
        subnormal = (out != 0) & (np.abs(out) < np.finfo(np.float32).tiny)
        assert not subnormal.any()
        assert_close(out, reference(kernels, (200, 200), combine=combine, normalize="peak", truncate=None), "float32")


def test_extreme_rotated_kernel_uses_exact_path_and_matches(helpers_as_python):
    # Narrow, rotated, untruncated over a large image: stepping would overflow, so each pixel is exact.
    kernels = gh.Kernels(x=[150.0], y=[120.0], sigma_x=[0.6], sigma_y=[9.0], theta=[0.5])
    from gaussheat_gpu.planning import make_grid, make_plan
    plan = make_plan(kernels, make_grid((260, 300)), truncate=None)
    p, box = plan.params[0], plan.boxes[0]
    helpers_as_python(rotated)  # rotated_is_safe and the helpers it calls, as Python
    assert not rotated.rotated_is_safe(p, box[0], box[1], box[2], box[3])
    for normalize in ("pdf", "count"):
        for dtype in ("float32", "float64"):
            actual = gh.render(kernels, (260, 300), backend="numba", dtype=dtype, normalize=normalize, truncate=None)
            assert_close(actual, reference(kernels, (260, 300), normalize=normalize, truncate=None), dtype)


# -- (5) rotated rows over windows of whole lane blocks ----------------------------------------------

def support_mask(kernels, shape, **options):
    """Pixels inside at least one kernel's support box, from the plan the backends receive."""
    from gaussheat_gpu.planning import make_grid, make_plan
    plan = make_plan(kernels, make_grid(shape), **options)
    inside = np.zeros((plan.grid.n_images, shape[-2], shape[-1]), dtype=bool)
    for c0, c1, r0, r1, image in plan.boxes:
        inside[image, r0:r1 + 1, c0:c1 + 1] = True
    return inside.reshape(shape)


@pytest.mark.parametrize("combine", ["sum", "max", "por"])
@pytest.mark.parametrize("width", [3, 7, 9, 13, 37])
def test_rotated_windows_at_edges_keep_other_pixels_bit_exact(combine, width):
    # Kernels hug both side edges, so windows of whole blocks shift left at the right edge, and
    # images narrower than a window (3, 7) or than some windows (9, 13) take the exact-box path.
    # Outside every support the caller's pixels (negative, -0.0, infinities, NaN) keep their bits.
    rng = np.random.default_rng(12 + width)
    n, height = 24, 40
    xs = np.where(rng.random(n) < 0.5, rng.uniform(width - 3, width + 1, n), rng.uniform(-1, 3, n))
    kernels = gh.Kernels(x=xs, y=rng.uniform(0, height, n), sigma_x=rng.uniform(0.5, 3, n),
                         sigma_y=rng.uniform(0.5, 3, n), theta=rng.uniform(-3, 3, n),
                         amplitude=rng.uniform(0.2, 1.0, n))
    shape = (height, width)
    inside = support_mask(kernels, shape, truncate=2.0)
    assert inside.any()
    if width > 8:
        assert not inside.all(), "the case must leave pixels outside every support"
    start = -rng.uniform(0, 1, shape) if combine == "max" else rng.uniform(0, 1, shape)
    special = np.array([-0.0, np.inf, -np.inf, np.nan, -3.5])
    outside = np.flatnonzero(~inside)
    start.flat[outside] = special[np.arange(outside.size) % special.size]
    expected = np.where(inside, start, 0.0)
    gh.render(kernels, shape, backend="numpy", combine=combine, truncate=2.0, out=expected, accumulate=True)
    for dtype in ("float32", "float64"):
        out = start.astype(dtype)
        gh.render(kernels, shape, backend="numba", combine=combine, truncate=2.0, out=out, accumulate=True)
        bits = out.view(np.uint32 if dtype == "float32" else np.uint64)
        assert np.array_equal(bits[~inside], start.astype(dtype).view(bits.dtype)[~inside])
        error = np.abs(out[inside].astype(np.float64) - expected[inside]).max()
        assert error <= TOLERANCE[dtype] * np.abs(expected[inside]).max(), (dtype, error)
        fresh = gh.render(kernels, shape, backend="numba", combine=combine, truncate=2.0, dtype=dtype)
        assert_close(fresh, reference(kernels, shape, combine=combine, truncate=2.0), dtype)


def test_max_over_negative_out_takes_zero_inside_supports():
    # max(s, v) with s < 0 and v flushed to 0 (a far tail) must give 0 inside the support, not s.
    kernels = gh.Kernels(x=[10.0, 30.0], y=[12.0, 20.0], sigma_x=[1.5, 0.6], sigma_y=[4.0, 3.0], theta=[0.7, -0.4],
                         amplitude=[1e-30, 1.0])
    shape = (40, 45)
    inside = support_mask(kernels, shape, truncate=None)
    assert inside.all()
    for dtype in ("float32", "float64"):
        out = np.full(shape, -2.0, dtype=dtype)
        gh.render(kernels, shape, backend="numba", combine="max", normalize="peak", truncate=None, out=out,
                  accumulate=True)
        assert (out >= 0).all()
        expected = np.full(shape, -2.0)
        gh.render(kernels, shape, backend="numpy", combine="max", normalize="peak", truncate=None, out=expected,
                  accumulate=True)
        assert np.abs(out - expected).max() <= TOLERANCE[dtype]


def test_rotated_recurrences_restart_over_large_boxes():
    # Boxes wider and taller than RESTART rows and columns, crossing band edges; float64 keeps 1e-12.
    rng = np.random.default_rng(13)
    n = 6
    kernels = gh.Kernels(x=rng.uniform(20, 180, n), y=rng.uniform(20, 180, n), sigma_x=rng.uniform(8, 20, n),
                         sigma_y=rng.uniform(8, 20, n), theta=rng.uniform(-3, 3, n))
    shape = (200, 203)
    for normalize in ("pdf", "count"):
        for dtype in ("float32", "float64"):
            actual = gh.render(kernels, shape, backend="numba", dtype=dtype, normalize=normalize)
            assert_close(actual, reference(kernels, shape, normalize=normalize), dtype)


# -- (6) a band's first axis-aligned kernel (or first two) written without zero-filling first --------

@pytest.mark.parametrize("combine", ["sum", "max", "por"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_first_kernel_written_directly_equals_zero_fill_and_combine(combine, dtype):
    # W1-like: wide kernels over every row (the first one written directly, zeros around its kept
    # columns and on its flushed far rows), then a case whose first kernel misses some band rows.
    # Without accumulate every pixel must come out exactly as combining into zeros does.
    amplitude = [0.9, 0.8, 0.5] if combine == "por" else [-1.0, 1.0, 0.5]
    cases = [gh.Kernels(x=[256.0, 260.0, 100.0], y=[256.0, 250.0, 20.0], sigma_x=[20.0, 40.0, 3.0],
                        sigma_y=[20.0, 80.0, 2.0], amplitude=amplitude),
             gh.Kernels(x=[60.0, 30.0], y=[40.0, 150.0], sigma_x=[2.0, 30.0], sigma_y=[1.5, 60.0],
                        amplitude=amplitude[:2]),
             # A first kernel below 0 everywhere (max takes 0), the second one small.
             gh.Kernels(x=[150.0, 50.0], y=[100.0, 50.0], sigma_x=[200.0, 3.0], sigma_y=[300.0, 2.0],
                        amplitude=amplitude[:2]),
             # Pairs written in one pass: wide columns over few rows then narrow columns over all
             # rows (each kernel flushed where the other is not), and disjoint column ranges.
             gh.Kernels(x=[150.0, 40.0], y=[100.0, 20.0], sigma_x=[200.0, 5.0], sigma_y=[6.0, 300.0],
                        amplitude=amplitude[:2]),
             gh.Kernels(x=[30.0, 250.0, 100.0], y=[100.0, 60.0, 90.0], sigma_x=[3.0, 4.0, 9.0],
                        sigma_y=[200.0, 150.0, 30.0], amplitude=amplitude)]
    for kernels, shape in zip(cases, [(512, 300), (200, 120), (200, 300), (200, 300), (200, 300)]):
        for truncate in (None, 4.0):
            options = dict(combine=combine, truncate=truncate, normalize="peak")
            out = np.full(shape, np.nan, dtype=dtype)
            gh.render(kernels, shape, backend="numba", out=out, **options)
            combined = np.zeros(shape, dtype=dtype)
            gh.render(kernels, shape, backend="numba", out=combined, accumulate=True, **options)
            bits = np.uint32 if dtype == "float32" else np.uint64
            assert np.array_equal(out.view(bits), combined.view(bits)), (shape, truncate)
            assert_close(out, reference(kernels, shape, **options), dtype)


def test_bands_without_kernels_are_zeroed():
    # Bands and whole images that no kernel reaches must still be overwritten with zeros.
    for kernels in (gh.Kernels(x=[20.0], y=[10.0], sigma_x=[400.0], sigma_y=[3.0], image=[1]),
                    gh.Kernels(x=[20.0], y=[10.0], sigma_x=[3.0], sigma_y=[2.0], theta=[0.5], image=[1])):
        out = np.full((3, 700, 40), np.nan, dtype=np.float32)
        gh.render(kernels, (3, 700, 40), backend="numba", out=out)
        assert_close(out, reference(kernels, (3, 700, 40)), "float32")


PAIR_NO_JIT_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import gaussheat_gpu as gh
    from gaussheat_gpu.backends.numba import bands, tiles

    calls = []
    written = bands.set_pair_rows
    tiles.set_pair_rows = lambda *a: calls.append(1) or written(*a)
    k = gh.Kernels(x=[40.0, 50.0], y=[30.0, 35.0], sigma_x=[5.0, 9.0], sigma_y=[7.0, 20.0], amplitude=[0.5, 0.7])
    errors = []
    for combine in ("sum", "max", "por"):
        options = dict(combine=combine, truncate=None, normalize="peak", dtype="float64")
        got = gh.render(k, (80, 100), backend="numba", **options)
        ref = gh.render(k, (80, 100), backend="numpy", **options)
        errors.append(float(np.abs(got - ref).max() / np.abs(ref).max()))
    print(json.dumps([len(calls), errors]))
""")


def test_pair_rows_without_jit_match_reference():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run([sys.executable, "-c", PAIR_NO_JIT_SCRIPT], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    calls, errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert calls > 0, "the two-kernel pass was not taken"
    assert max(errors) <= TOLERANCE["float64"], errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_rotated_rows_ignore_an_infinite_first_pixel(dtype):
    # A narrow untruncated rotated kernel takes the one-exp-per-pixel path; accumulating into rows
    # whose first pixel is inf must leave every other pixel finite, as the NumPy backend does.
    kernels = gh.Kernels(x=[32.0], y=[32.0], sigma_x=[0.4], sigma_y=[3.0], theta=[0.7])
    expected = np.zeros((64, 64))
    expected[:, 0] = np.inf
    gh.render(kernels, (64, 64), backend="numpy", out=expected, accumulate=True, truncate=None)
    out = np.zeros((64, 64), dtype)
    out[:, 0] = np.inf
    gh.render(kernels, (64, 64), backend="numba", out=out, accumulate=True, truncate=None)
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out[:, 1:], expected[:, 1:], rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-30)
