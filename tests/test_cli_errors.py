"""The command line under bad arguments and environments: one line on stderr and exit status 2,
never a traceback; and the demo's PNG shows the rendered seed, not just axes and a colour bar."""

import os
import subprocess
import sys

import numpy as np
import pytest

import gaussheat_gpu as gh
from gaussheat_gpu import cli, cli_render
from gaussheat_gpu.workloads import seed_workload


def run(*args, env=None, cwd=None):
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "gaussheat_gpu", *args], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=cwd)


@pytest.mark.parametrize("args, env, message", [
    (("info",), {"GAUSSHEAT_BACKEND": "fortran"}, "environment variable GAUSSHEAT_BACKEND = 'fortran' is not one of"),
    (("demo", "--repeat", "0"), {}, "argument --repeat: must be at least 1, got 0"),
    (("demo", "--repeat", "x"), {}, "argument --repeat: invalid int value: 'x'"),
    (("demo", "--output", "/no/such/folder/seed.png", "--repeat", "1"), {}, "does not exist"),
])
def test_errors_are_one_line_and_exit_2(args, env, message, tmp_path):
    result = run(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr


def test_output_that_is_a_folder_is_refused_before_timing(tmp_path, monkeypatch, capsys):
    timed = []
    monkeypatch.setattr(cli, "seed_loop", lambda *args, **kwargs: timed.append("seed loop"))
    monkeypatch.setattr(cli, "render", lambda *args, **kwargs: timed.append("render"))
    assert cli.main(["demo", "--output", str(tmp_path), "--repeat", "1"]) == 2
    assert timed == []  # neither the seed's loop nor a backend ran
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"gaussheat demo: error: --output {str(tmp_path)!r} is a directory\n"


@pytest.mark.parametrize("error", [ValueError("a message\n  on two lines"), ImportError("a message\n  on two lines")])
def test_render_errors_reach_the_one_handler(tmp_path, monkeypatch, capsys, error):
    def fail(path):
        raise error

    monkeypatch.setattr(cli_render, "read_kernels", fail)
    assert cli.main(["render", str(tmp_path / "k.csv"), "-o", str(tmp_path / "k.npy")]) == 2
    assert capsys.readouterr().err == "gaussheat render: error: a message on two lines\n"


def test_demo_saves_the_seed_heatmap_itself(tmp_path, monkeypatch, capsys):
    # The PNG has axes, labels and a colour bar whatever the data: check what is drawn instead.
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.imshow

    def imshow(self, data, *args, **kwargs):
        drawn.append(np.array(data, dtype=np.float64))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", imshow)
    monkeypatch.setenv("GAUSSHEAT_BACKEND", "numpy")
    output = tmp_path / "seed.png"
    assert cli.main(["demo", "--output", str(output), "--repeat", "1"]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    case = seed_workload()
    expected = gh.render(case.kernels, case.shape, backend="numpy", dtype="float64", **case.options)
    assert len(drawn) == 1 and drawn[0].shape == expected.shape
    assert np.abs(drawn[0] - expected).max() <= 1e-5 * expected.max()
    assert f"(max {expected.max():.3g})" in capsys.readouterr().out
