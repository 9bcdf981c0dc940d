"""``gaussheat render``: kernel tables in, PNG / NPY / TIFF out; malformed inputs refused with
file, line and column, exit status 2, and no output file left behind."""

import io
import json
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu import cli, cli_render
from gaussheat_gpu._progress import ProgressBar
from gaussheat_gpu.plot import to_rgba


def gaussheat(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gaussheat_gpu", "render", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def table(n, seed=0, width=640, height=480):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0, width, n).round(3), "y": rng.uniform(0, height, n).round(3),
            "sigma_x": rng.uniform(1, 6, n).round(3), "sigma_y": rng.uniform(1, 6, n).round(3),
            "theta": rng.uniform(0, 3, n).round(3), "amplitude": rng.uniform(0.5, 1, n).round(3)}


def write_csv(path, columns):
    names = list(columns)
    lines = [",".join(names)] + [",".join(repr(float(columns[n][i])) for n in names)
                                 for i in range(len(columns[names[0]]))]
    path.write_text("\n".join(lines) + "\n")


def read_png(path):
    """(H, W, 4) uint8 from an 8-bit RGBA PNG with filter 0 (what the writer makes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8:pos + 8 + length]
        pos += 12 + length
    width, height = int.from_bytes(chunks[b"IHDR"][:4], "big"), int.from_bytes(chunks[b"IHDR"][4:8], "big")
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + 4 * width)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, 4)


def test_ten_thousand_kernels_from_csv_to_png_and_npy(tmp_path):
    columns = table(10_000)
    write_csv(tmp_path / "k.csv", columns)
    result = gaussheat("k.csv", "-o", "k.png", "-o", "k.npy", "--shape", "480x640", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote k.png, k.npy (480 x 640" in result.stdout
    expected = gh.render(gh.Kernels.from_columns(columns), (480, 640), backend="numpy")
    heat = np.load(tmp_path / "k.npy")
    assert heat.shape == (480, 640) and heat.dtype == np.float32
    assert np.abs(heat - expected).max() <= 1e-5 * expected.max()
    png = read_png(tmp_path / "k.png")
    assert png.shape == (480, 640, 4)  # exactly H x W pixels
    np.testing.assert_array_equal(png, to_rgba(heat, "inferno"))


def test_tiff_is_float32_pages_readable_by_pillow(tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    data = np.column_stack([rng.uniform(0, 30, n), rng.uniform(0, 20, n), rng.uniform(1, 3, n),
                            rng.integers(0, 3, n)])
    np.save(tmp_path / "k.npy", np.rec.fromarrays(data.T, names="x,y,sigma_x,image"))
    result = gaussheat("k.npy", "-o", "k.tif", "--shape", "3x20x30", "--normalize", "peak", "--combine", "max",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = gh.render(gh.Kernels(data[:, 0], data[:, 1], data[:, 2], image=data[:, 3].astype(int)), (3, 20, 30),
                         normalize="peak", combine="max", backend="numpy")
    Image = pytest.importorskip("PIL.Image", reason="Pillow reads the TIFF back (any TIFF reader would do)")
    with Image.open(tmp_path / "k.tif") as tif:
        assert tif.n_frames == 3
        for page in range(3):
            tif.seek(page)
            assert tif.mode == "F" and tif.size == (30, 20)
            assert np.abs(np.array(tif) - expected[page]).max() <= 1e-6 * expected.max()


def test_json_npz_and_options(tmp_path):
    columns = table(30, width=40, height=30)
    (tmp_path / "rows.json").write_text(json.dumps([{k: float(v[i]) for k, v in columns.items()} for i in range(30)]))
    (tmp_path / "cols.json").write_text(json.dumps({k: v.tolist() for k, v in columns.items()}))
    np.savez(tmp_path / "k.npz", **columns)
    expected = gh.render(gh.Kernels.from_columns(columns), (30, 40), combine="por", normalize="peak", truncate=None,
                         extent=(0, 20, 0, 15), dtype="float64", backend="numpy")
    for source in ("rows.json", "cols.json", "k.npz"):
        result = gaussheat(source, "-o", "out.npy", "--shape", "30x40", "--combine", "por", "--normalize", "peak",
                           "--truncate", "none", "--extent", "0,20,0,15", "--dtype", "float64", "--backend", "numpy",
                           cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        heat = np.load(tmp_path / "out.npy")
        assert heat.dtype == np.float64 and np.abs(heat - expected).max() <= 1e-12


@pytest.mark.parametrize("name, text, message", [
    ("bad.csv", "x,y,sigma\n1,2,3\n4,5,abc\n", r"bad.csv:3:5: cannot read 'abc' as a number \(column 'sigma'\)"),
    ("bad.csv", "x,y,sigma\n1,2,3\n4,5\n", r"bad.csv:3:1: 2 fields, but the header names 3"),
    ("bad.csv", "x,y,sigmax\n1,2,3\n", r"bad.csv:1:5: unknown column 'sigmax'"),
    ("bad.csv", "x,x,y,sigma\n1,2,3,4\n", r"bad.csv:1:3: column 'x' is named twice \(columns 1 and 2\)"),
    ("bad.csv", "x,y,sigma\n1,2,3\n4,5,-1\n", r"bad.csv:3:5: sigma_x\[1\] = -1.0 must be > 0"),
    ("bad.csv", "", r"bad.csv:1:1: empty file"),
    ("bad.csv", "x,y,sigma\n1,2,3\n\n4,5,6\n", r"bad.csv:3:1: 0 fields, but the header names 3"),
    ("bad.csv", "x,y,sigma\r\n1,2,3\r\n4,5,6,\r\n", r"bad.csv:3:1: 4 fields, but the header names 3"),
    ("bad.csv", "x,y,sigma\n1,2,3\n4,5,\n", r"bad.csv:3:5: cannot read '' as a number \(column 'sigma'\)"),
    ("bad.csv", "x,y,sigma\n1,2,3\n4,nan,6\n", r"bad.csv:3:3: y\[1\] = nan"),
    ("bad.json", '{"x": [1, 2],\n "y": [1 2]}', r"bad.json:2:10: Expecting ','"),
    ("bad.json", '[{"x": 1, "y": 2, "sigma": "3"}]', r"bad.json: kernel 0: sigma = '3' is not a number"),
])
def test_malformed_input_is_refused_with_its_place_and_no_output(tmp_path, monkeypatch, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", name, "-o", "out.png"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output, no temporary file


@pytest.mark.parametrize("text, first, numpy_reads", [
    ("x,y,sigma\n1,2,3\n4.5,5e0,0.25\n", 1.0, True),
    ("x,y,sigma\r\n1,2,3\r\n4.5,5e0,0.25\r\n", 1.0, True),  # Windows line ends
    ("x,y,sigma\n1,2,3\n4.5,5e0,0.25", 1.0, True),  # no newline at the end
    (" x , y ,sigma\n 1 ,2,3\n4.5,\t5e0,0.25\n", 1.0, True),
    ('x,y,sigma\n"1",2,3\n4.5,5e0,0.25\n', 1.0, False),  # quotes: read cell by cell
    ("x,y,sigma\n1_0,2,3\n4.5,5e0,0.25\n", 10.0, False),  # Python's float reads 1_0, NumPy's does not
    ("x,y,sigma\n\u0661,2,3\n4.5,5e0,0.25\n", 1.0, False),  # so does an Arabic-Indic 1
])
def test_csv_is_read_by_numpy_where_it_can_and_cell_by_cell_alike(tmp_path, monkeypatch, text, first, numpy_reads):
    path = tmp_path / "k.csv"
    path.write_bytes(text.encode())
    cell_by_cell = []
    real = cli_render._parse_csv
    monkeypatch.setattr(cli_render, "_parse_csv", lambda *args: cell_by_cell.append(args) or real(*args))
    kernels = cli_render.read_kernels(path)
    assert bool(cell_by_cell) != numpy_reads
    expected = gh.Kernels([first, 4.5], [2.0, 5.0], [3.0, 0.25])
    for name, values in expected.as_dict().items():
        np.testing.assert_array_equal(getattr(kernels, name), values)
    assert kernels.x.dtype == np.float64


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "k.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    result = gaussheat("k.npy", "-o", "out.npy", cwd=tmp_path)
    assert result.returncode == 2 and "allow_pickle=False" in result.stderr
    assert not (tmp_path / "out.npy").exists()


def test_failed_write_leaves_no_file(tmp_path):
    def fail(path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    def succeed(path):
        with open(path, "wb") as f:
            f.write(b"whole")

    with pytest.raises(OSError, match="disk full"):  # the second fails: the first is not kept either
        cli_render.write_atomically([tmp_path / "a.npy", tmp_path / "b.png"], [succeed, fail])
    assert list(tmp_path.iterdir()) == []
    cli_render.write_atomically([tmp_path / "a.npy"], [succeed])
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"] and (tmp_path / "a.npy").read_bytes() == b"whole"


def test_default_shape_holds_every_centre_and_png_needs_one_image(tmp_path):
    write_csv(tmp_path / "k.csv", {"x": [3.5, 10.0], "y": [7.2, 1.0], "sigma": [1.0, 2.0], "image": [0, 1]})
    result = gaussheat("k.csv", "-o", "k.npy", cwd=tmp_path)
    assert result.returncode == 0 and np.load(tmp_path / "k.npy").shape == (2, 8, 11)
    result = gaussheat("k.csv", "-o", "k.png", cwd=tmp_path)
    assert result.returncode == 2 and "a PNG holds one image" in result.stderr


def test_progress_bar_over_chunks_gives_the_one_call_result(monkeypatch):
    monkeypatch.setattr(cli_render, "CHUNK_KERNELS", 40)
    columns = table(170, width=60, height=50)
    kernels = gh.Kernels.from_columns(columns)
    stream = io.StringIO()
    for combine in ("sum", "max", "por"):
        options = dict(combine=combine, normalize="peak", truncate=3.0, backend="numpy", dtype="float64")
        amplitude = 0.9 if combine == "por" else None
        k = kernels if amplitude is None else gh.Kernels.from_columns(columns | {"amplitude": np.full(170, 0.9)})
        chunked = cli_render.render_with_progress(k, (50, 60), "always", stream=stream, **options)
        np.testing.assert_allclose(chunked, gh.render(k, (50, 60), **options), rtol=1e-12, atol=1e-15)
    assert stream.getvalue().count("100% 5/5 parts") == 3 and "rendering: [" in stream.getvalue()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_render_without_a_bar_is_one_render_call_bit_for_bit(monkeypatch):
    # a float32 por of 170 overlapping kernels: parts of 40 round differently from one call
    monkeypatch.setattr(cli_render, "CHUNK_KERNELS", 40)
    kernels = gh.Kernels.from_columns(table(170, width=20, height=15))
    options = dict(combine="por", normalize="peak", truncate=None, backend="numpy", dtype="float32")
    expected = gh.render(kernels, (15, 20), **options)
    parted = cli_render.render_with_progress(kernels, (15, 20), "always", stream=io.StringIO(), **options)
    assert not np.array_equal(parted, expected)  # the case tells parts from one call
    for progress, stream in (("never", Terminal()), ("auto", io.StringIO())):  # auto: not a terminal
        heat = cli_render.render_with_progress(kernels, (15, 20), progress, stream=stream, **options)
        np.testing.assert_array_equal(heat, expected)
        assert stream.getvalue() == ""


def test_auto_bar_on_a_terminal_shows_after_its_delay(monkeypatch):
    monkeypatch.setattr(cli_render, "CHUNK_KERNELS", 40)
    calls = []
    monkeypatch.setattr(cli_render, "render", lambda *args, **kw: calls.append(kw) or gh.render(*args, **kw))
    kernels = gh.Kernels.from_columns(table(170, width=20, height=15))
    for delay, drawn in ((1e9, ""), (0.0, "100% 5/5 parts")):
        monkeypatch.setattr(cli_render, "PROGRESS_AFTER_S", delay)
        calls.clear()
        stream = Terminal()
        cli_render.render_with_progress(kernels, (15, 20), "auto", stream=stream, backend="numpy")
        assert len(calls) == 5 and drawn in stream.getvalue()
        assert (stream.getvalue() == "") == (drawn == "")
    with pytest.raises(ValueError, match="progress = 'sometimes' is not one of auto, always, never"):
        cli_render.render_with_progress(kernels, (15, 20), "sometimes")


def test_progress_bar_redraws_at_most_every_fifth_of_a_second_and_ends_the_line():
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar({"a": 300, "b": 100, "c": 600}, "map.zarr", stream, clock=lambda: now[0])
    now[0] = 0.1
    bar.tick("a")  # too soon: nothing drawn
    assert stream.getvalue() == ""
    now[0] = 1.0
    bar.tick("b")
    assert stream.getvalue() == "\rmap.zarr: [############..................]  40% 2/3 chunks, 0.0 Mpixel/s, 1.0 s, 2 s left"
    now[0] = 1.1
    bar.tick("c")  # the last step: close draws it
    bar.close()
    assert stream.getvalue().endswith("\rmap.zarr: [##############################] 100% 3/3 chunks, 0.0 Mpixel/s, 1.1 s\n")
    quiet = io.StringIO()
    bar = ProgressBar([5, 5], "rendering", quiet, delay=1.0, clock=lambda: now[0])
    bar.tick(0)
    bar.tick(1)
    bar.close()  # done before its delay: never shown
    assert quiet.getvalue() == ""


def test_modules_examples_run():
    import doctest

    from gaussheat_gpu import _progress

    for module in (_progress, cli_render):
        failures, tried = doctest.testmod(module)
        assert tried >= 3 and failures == 0


def test_zarr_output_renders_chunk_by_chunk_and_resumes(tmp_path, monkeypatch, capsys):
    zarr = pytest.importorskip("zarr")
    dask = pytest.importorskip("dask")
    import gaussheat_gpu.dask as ghd

    columns = table(300, width=100, height=70)
    write_csv(tmp_path / "k.csv", columns)
    args = ["render", str(tmp_path / "k.csv"), "-o", str(tmp_path / "map.zarr"), "--shape", "70x100", "--chunks",
            "32", "--backend", "numpy"]
    real, rendered = ghd._render_block, []

    def interrupted(pieces, block, spec):
        if block == 4:
            raise KeyboardInterrupt
        rendered.append(block)
        return real(pieces, block, spec)

    monkeypatch.setattr(ghd, "_render_block", interrupted)
    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="sync"):
        cli.main(args + ["--progress", "never"])
    left = np.flatnonzero(~zarr.open_group(tmp_path / "map.zarr", mode="r")["chunks_done"][...])
    assert 0 < len(left) < 9
    monkeypatch.setattr(ghd, "_render_block", lambda *a: rendered.append(a[1]) or real(*a))
    rendered.clear()
    capsys.readouterr()
    assert cli.main(args) == 0
    assert sorted(rendered) == list(left)  # only the chunks not yet written
    captured = capsys.readouterr()
    assert f"100% {len(left)}/{len(left)} chunks" in captured.err
    assert f"wrote {tmp_path / 'map.zarr'} (70 x 100, float32, chunks of 32 x 32" in captured.out
    heat = zarr.open_group(tmp_path / "map.zarr", mode="r")["heatmap"]
    assert heat.chunks == (32, 32)
    expected = gh.render(gh.Kernels.from_columns(columns), (70, 100), backend="numpy", dtype="float64")
    assert np.abs(heat[...] - expected).max() <= 1e-5 * expected.max()
    result = gaussheat(*args[1:], cwd=tmp_path)  # the console command: a rerun finds every chunk written
    assert result.returncode == 0 and "map.zarr: every chunk was already written" in result.stderr


def test_zarr_chunks_may_be_rectangular_and_zarr_options_need_a_zarr_output(tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    write_csv(tmp_path / "k.csv", table(20, width=40, height=30))
    assert cli.main(["render", str(tmp_path / "k.csv"), "-o", str(tmp_path / "m.zarr"), "--shape", "2x30x40",
                     "--chunks", "16x24", "--progress", "never", "--backend", "numpy"]) == 0
    assert zarr.open_group(tmp_path / "m.zarr", mode="r")["heatmap"].chunks == (1, 16, 24)
    for option, value in (("--chunks", "8"), ("--scheduler", "tcp://127.0.0.1:1")):
        assert cli.main(["render", str(tmp_path / "k.csv"), "-o", str(tmp_path / "k.npy"), option, value]) == 2
        assert f"{option} applies to a Zarr output" in capsys.readouterr().err
    assert not (tmp_path / "k.npy").exists()


@pytest.mark.parametrize(("extra", "message"), [((), "needs --chunks N"), (("--chunks", "0"), "needs --chunks N"),
                                                (("--chunks", "8", "-o", "k.npy"), "cannot be combined"), (("--chunks", "8x8x8x8"), "one size per axis")])
def test_zarr_output_needs_chunks_and_stands_alone(tmp_path, extra, message):
    write_csv(tmp_path / "k.csv", table(5, width=20, height=10))
    result = gaussheat("k.csv", "-o", "map.zarr", "--shape", "10x20", *extra, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "map.zarr").exists() and not (tmp_path / "k.npy").exists()
