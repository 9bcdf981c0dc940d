"""The command line: ``gaussheat info`` and ``gaussheat demo`` (console script and ``python -m``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import gaussheat_gpu as gh


def run_cli(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "gaussheat_gpu", *args], capture_output=True, text=True,
                            cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_info_lists_version_backends_and_reasons():
    text = run_cli("info")
    assert f"gaussheat_gpu {gh.__version__}" in text
    for name in gh.available_backends():
        assert f"{name:<8}available" in text
    for name in set(gh.backends.names()) - set(gh.available_backends()):
        assert f"{name:<8}unavailable: " in text  # with the reason
    assert f"auto -> {gh.available_backends()[0]}" in text
    assert "CUDA devices:" in text


def test_console_script_is_installed():
    script = shutil.which("gaussheat", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "info"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "backends (best first):" in result.stdout


def test_demo_writes_the_seed_png_and_times_every_backend(tmp_path):
    text = run_cli("demo", "--output", "seed.png", "--repeat", "2", cwd=tmp_path)
    assert "the seed's Python double loop (64x64 crop, scaled)" in text
    for name in gh.available_backends():
        assert f"gaussheat_gpu, backend={name}" in text
    png = tmp_path / "seed.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert np.ptp(pixels[..., :3]) > 0.5  # not a blank picture


def test_unknown_command_fails_with_usage():
    result = subprocess.run([sys.executable, "-m", "gaussheat_gpu", "paint"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr
