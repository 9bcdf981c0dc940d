# Two commands for a fresh machine (Python 3.11+, no GPU needed):
#   make demo   render the seed's heatmap to seed.png and print timings
#   make test   run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-deep mutation bench bench-dask gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m gaussheat_gpu demo --output seed.png

test: $(STAMP)
	$(PY) -m pytest

# The deep tier: larger random cases and more examples (tens of minutes on 2 cores).
test-deep: $(STAMP)
	GAUSSHEAT_FUZZ_EXAMPLES=2000 $(PY) -m pytest -m "deep or not deep" --hypothesis-profile=deep

# Plant each one-line bug of tests/mutations.py in a copy of the package and check the suite catches it.
mutation: $(STAMP)
	$(PY) tests/mutations.py

# CPU benchmark suite: every workload against its baselines and floors, in one run (a few minutes);
# writes bench/results/<machine>-<date>.{json,md} and prints the table.
bench: $(STAMP)
	$(PY) bench/run.py

# D1: Dask and Zarr on the 16384^2 map of 1M kernels and a 4 GiB Zarr write (several minutes; needs
# ~6 GiB of memory and 5 GiB of disk); writes bench/results/d1-<machine>-<date>.{json,md}.
bench-dask: $(STAMP)
	$(PY) bench/dask_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks seed.png

# On a machine with a CUDA GPU and CuPy installed, no network, no venv (the system python3, this
# checkout on PYTHONPATH): every GPU test (--gpu turns "no usable device" into an error instead of
# a skip), then the G1 benchmark, which writes bench/results/gpu-<device>-<date>.{json,md}.
# UserWarnings are shown, not raised: CuPy may warn at import about how it found the CUDA toolkit.
gpu-check:
	PYTHONPATH=. python3 -m pytest --gpu -m gpu tests -p no:cacheprovider -W "default::UserWarning"
	PYTHONPATH=. python3 bench/gpu_bench.py
