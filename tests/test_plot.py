"""gaussheat_gpu.plot: pixel centres shown where render evaluated them; colour-mapped RGBA."""

import sys

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu.plot import imshow, pixel_edges, to_rgba

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is the optional plot extra")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.mark.parametrize("extent", [None, (-3.0, 3.0, -2.0, 2.0), (10.0, 0.0, 5.0, -5.0)])
@pytest.mark.parametrize("origin", ["upper", "lower"])
def test_imshow_puts_each_pixel_centre_at_its_render_coordinates(extent, origin):
    shape = (7, 9)
    heat = gh.render(gh.Kernels(x=0.0, y=0.0, sigma_x=2.0), shape, extent=extent, backend="numpy")
    fig, ax = plt.subplots()
    image = imshow(heat, extent=extent, ax=ax, origin=origin)
    left, right, bottom, top = image.get_extent()
    x0, x1, y0, y1 = extent or (0, 8, 0, 6)
    # matplotlib's pixel c spans [left + c w, left + (c+1) w] along x; its centre must be render's X_c.
    width = (right - left) / shape[1]
    np.testing.assert_allclose(left + (np.arange(9) + 0.5) * width, np.linspace(x0, x1, 9), atol=1e-12)
    # Row r is drawn at top + (r + 1/2) h with origin "upper", bottom + (r + 1/2) h' with "lower".
    start, stop = (top, bottom) if origin == "upper" else (bottom, top)
    np.testing.assert_allclose(start + (np.arange(7) + 0.5) * (stop - start) / 7, np.linspace(y0, y1, 7), atol=1e-12)
    plt.close(fig)


def test_pixel_edges_is_half_a_pixel_beyond_the_centres():
    assert pixel_edges((4, 3)) == (-0.5, 2.5, 3.5, -0.5)
    assert pixel_edges((1, 1)) == (-0.5, 0.5, 0.5, -0.5)
    assert pixel_edges((2, 5, 3), (0.0, 1.0, 2.0, 0.0)) == (-0.25, 1.25, -0.25, 2.25)  # rows run downwards in y


def test_to_rgba_matches_matplotlibs_colormap_and_clips():
    heat = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, np.nan]])
    rgba = to_rgba(heat, "viridis")
    expected = matplotlib.colormaps["viridis"](np.nan_to_num(heat), bytes=True)
    np.testing.assert_array_equal(rgba[:, :, :3].reshape(-1, 3)[:5], expected.reshape(-1, 4)[:5, :3])
    assert rgba[1, 2, 3] == 0 and (rgba.reshape(-1, 4)[:5, 3] == 255).all()  # NaN is transparent
    gray = to_rgba(heat, "gray", vmin=0.25, vmax=0.75)
    assert gray[0, :, 0].tolist() == [0, 0, 128] and gray[1, :2, 0].tolist() == [255, 255]
    assert to_rgba(np.full((2, 2), 3.0), "gray")[..., 0].tolist() == [[0, 0], [0, 0]]  # flat: the low end
    with pytest.raises(ValueError, match="one 2-D image"):
        to_rgba(np.zeros((2, 3, 4)))


def test_to_rgba_takes_colormaps_from_the_registry_without_pyplot(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing pyplot now fails
    heat = np.array([[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(to_rgba(heat, "magma"), matplotlib.colormaps["magma"](heat, bytes=True))
    with pytest.raises(ValueError, match=r"cmap = 'no-such-map' is not a matplotlib colormap .*valid value"):
        to_rgba(heat, "no-such-map")


def test_picture_script_draws_one_picture_per_workflow(tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs" / "make_pictures.py"
    spec = importlib.util.spec_from_file_location("make_pictures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out-dir", str(tmp_path)]) == 0
    for name in module.PICTURES:
        pixels = matplotlib.image.imread(tmp_path / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert np.ptp(pixels[..., :3]) > 0.5, name  # not blank


def test_docstring_examples_run():
    import doctest

    import gaussheat_gpu.plot

    result = doctest.testmod(gaussheat_gpu.plot)
    assert result.attempted > 5 and result.failed == 0
