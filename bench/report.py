"""Tables and results files, shared by the CPU runner (bench/run.py) and the GPU script.

A run produces :class:`Row` s (one per workload x method), :class:`Floor` s (W7 or the device
floor) and optionally first-call measurements; :func:`write_results` writes them as
``<prefix>-<date>.json`` and a markdown table ``<prefix>-<date>.md``. The README section
(bench/readme_table.py) is rendered from the JSON by :func:`readme_section`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One method on one workload.

    ``median_s`` is for the whole workload: for rows timed on a part (``scale != 1``) it is the
    measured median times ``scale``, and ``timed_part`` says what was measured.
    """

    workload: str
    title: str
    kind: str  # "baseline" or "backend"
    method: str
    median_s: float
    rel_error: float
    scale: float = 1.0
    timed_part: str = ""
    measured_median_s: float = 0.0
    rounds: int = 0
    iterations: int = 1
    first_call_s: float | None = None
    note: str = ""
    floor: str = ""  # Floor.name this row is divided by; "" for the run's relevant_floor
    min_s: float | None = None  # fastest round, whole workload: far below the median means a noisy machine


@dataclass
class Floor:
    """A floor: ``size`` bytes (or elements) processed in ``median_s`` on ``threads`` threads."""

    name: str  # "write-reused", "write-fresh", "exp-float32", "device-copy", ...
    median_s: float
    size: int
    unit: str = "B"  # "B" for bytes, "elements"
    workload: str = ""
    threads: int = 1  # host threads used; 0 for device floors

    @property
    def rate(self) -> float:
        return self.size / self.median_s


@dataclass
class Results:
    """Everything one run measured, plus where and how."""

    machine: dict
    rows: list
    floors: list
    relevant_floor: str  # the Floor.name each row's time is divided by (its workload's)
    command: str
    date: str = field(default_factory=lambda: _dt.date.today().isoformat())
    first_calls: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    raw: dict | None = None  # e.g. pytest-benchmark's own JSON

    def floor_for(self, workload, name="") -> Floor | None:
        """The floor ``name`` (default the run's ``relevant_floor``) measured for ``workload``'s output."""
        name = name or self.relevant_floor
        return next((f for f in self.floors if f.name == name and f.workload == workload), None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data) -> "Results":
        data = dict(data)
        data["rows"] = [Row(**r) for r in data["rows"]]
        data["floors"] = [Floor(**f) for f in data["floors"]]
        return cls(**data)


# -- machine ------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _numba_threads():
    try:
        import numba
    except ImportError:
        return None
    return numba.config.NUMBA_NUM_THREADS  # what parallel=True kernels use (NUMBA_NUM_THREADS or every core)


def machine_info(device=None, threads=None) -> dict:
    """Where a run happened: host, CPU, cores the process may use, library versions, GPU if any.

    Parameters
    ----------
    device : str, optional
        GPU name, for GPU runs.
    threads : int, optional
        Threads the measured code used (default: the cores this process may run on).

    Returns
    -------
    dict
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    info = dict(node=platform.node(), cpu=_cpu_model(), cores=cores, threads=threads or cores,
                python=platform.python_version(), system=f"{platform.system()} {platform.machine()}")
    for package in ("numpy", "scipy", "numba", "gaussheat_gpu"):
        info[package] = _version(package)
    info["numba_threads"] = _numba_threads()
    if device:
        info["device"] = device
    return info


def _slug(text, limit) -> str:
    text = re.sub(r"\((r|tm|R|TM)\)|\bcpu\b|\bprocessor\b|@.*$", " ", text, flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def machine_name(info) -> str:
    """Short, filename-safe machine name: host, CPU model and core count; ``gpu-<device>`` for GPU runs."""
    if info.get("device"):
        return f"gpu-{_slug(info['device'], 32)}"
    parts = [_slug(info.get("node") or "host", 20), _slug(info.get("cpu", ""), 24), f"{info.get('cores')}c"]
    return "-".join(p for p in parts if p)


# -- formatting ---------------------------------------------------------------------------------

def fmt_seconds(seconds) -> str:
    """``1.23 s``, ``45.6 ms``, ``789 us``: three significant digits."""
    if seconds is None:
        return ""
    for unit, factor in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= factor:
            return f"{seconds / factor:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt_ratio(ratio) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    return f"{ratio:.3g}x"


def _fmt_size(size, unit) -> str:
    if unit != "B":
        return f"{size / 1e6:.3g} M {unit}"
    for suffix, factor in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if size >= factor:
            return f"{size / factor:.3g} {suffix}"
    return f"{size} B"


def _fmt_rate(floor) -> str:
    if floor.unit == "B":
        return f"{floor.rate / 1e9:.3g} GB/s"
    return f"{floor.rate / 1e9:.3g} G {floor.unit}/s"


def _method_label(row) -> str:
    if row.kind == "baseline":
        label = f"baseline: {row.method}"
        if row.scale != 1:
            label += f" (timed on {row.timed_part}, scaled x{row.scale:.3g})"
        return label
    return f"**gaussheat {row.method}**"


def speedups(row, rows) -> str:
    """``row``'s speed-up over each baseline of its workload (empty for baselines)."""
    if row.kind == "baseline":
        return ""
    parts = [f"{_fmt_ratio(b.median_s / row.median_s)} vs {b.method}"
             for b in rows if b.workload == row.workload and b.kind == "baseline"]
    return "; ".join(parts)


def main_table(results, link_titles=True) -> str:
    """The workload x method table (markdown)."""
    lines = ["| workload | method | median | speed-up | x floor | max rel err | first call | rounds |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    order = list(dict.fromkeys(r.workload for r in results.rows))
    for workload in order:
        rows = [r for r in results.rows if r.workload == workload]
        rows.sort(key=lambda r: (r.kind != "baseline",))  # baselines first, then backends
        for i, row in enumerate(rows):
            floor = results.floor_for(workload, row.floor)
            head = f"{workload}: {row.title}" if i == 0 else ""
            x_floor = f"{row.median_s / floor.median_s:.3g}" if floor else ""
            rounds = f"{row.rounds}" + (f"x{row.iterations}" if row.iterations > 1 else "") if row.rounds else ""
            lines.append(f"| {head} | {_method_label(row)} | {fmt_seconds(row.median_s)} | {speedups(row, rows)} "
                         f"| {x_floor} | {row.rel_error:.1e} | {fmt_seconds(row.first_call_s)} | {rounds} |")
    return "\n".join(lines)


def floors_table(results) -> str:
    """The floors measured in the run (markdown): per-workload write floors, then the others."""
    by_workload = {}
    for f in results.floors:
        if f.workload:
            by_workload.setdefault(f.workload, {})[f.name] = f
    names = list(dict.fromkeys(f.name for f in results.floors if f.workload))
    lines = ["| output of | size | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for workload, found in by_workload.items():
        size = next(iter(found.values()))
        cells = [f"{fmt_seconds(found[n].median_s)} ({_fmt_rate(found[n])}"
                 + (f", {found[n].threads} thr)" if found[n].threads else ")") if n in found else "" for n in names]
        lines.append(f"| {workload} | {_fmt_size(size.size, size.unit)} | " + " | ".join(cells) + " |")
    others = [f for f in results.floors if not f.workload]
    if others:
        lines += ["", "| floor | size | median | rate | threads |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {f.name} | {_fmt_size(f.size, f.unit)} | {fmt_seconds(f.median_s)} | {_fmt_rate(f)} "
                  f"| {f.threads} |" for f in others]
    return "\n".join(lines)


def first_call_table(results) -> str:
    """Cold and warm-cache first calls in new processes (markdown): medians, and the fastest and
    slowest of the repeats where there were several."""
    lines = ["| backend | workload | import | first call, cold cache | first call, warm cache | warm call |",
             "|---|---|---:|---:|---:|---:|"]
    marked = False
    for r in results.first_calls:
        mark = "*" if r.get("numba_loaded_by_inputs") else ""
        marked = marked or bool(mark)
        lines.append(f"| {r['backend']} | {r['workload']}{mark} | {fmt_seconds(r['import_s'])} "
                     f"| {_with_range(r['cold_first_call_s'], r.get('cold_range_s'))} "
                     f"| {_with_range(r['warm_first_call_s'], r.get('warm_range_s'))} "
                     f"| {fmt_seconds(r['warm_second_call_s'])} |")
    repeats = {r.get("repeats", 1) for r in results.first_calls}
    if repeats != {1}:
        lines += ["", f"Medians of {', '.join(map(str, sorted(repeats)))} new processes each (a new cache directory "
                  "for each cold one), with the fastest and slowest in parentheses."]
    if marked:
        lines += ["", "\\* Building this workload's inputs (untimed) already imported Numba and ran compiled code "
                  "(W10's: `density_map`'s k-NN), so these first calls leave out Numba's import and start-up, "
                  "and the cold one that code's compilation."]
    return "\n".join(lines)


def _with_range(median, extremes):
    if not extremes or extremes[0] == extremes[1]:
        return fmt_seconds(median)
    return f"{fmt_seconds(median)} ({fmt_seconds(extremes[0])}-{fmt_seconds(extremes[1])})"


def machine_line(info) -> str:
    """One sentence naming the machine."""
    where = f"{info['device']} on " if info.get("device") else ""
    versions = ", ".join(f"{p} {info[p]}" for p in ("numpy", "scipy", "numba", "cupy", "torch") if info.get(p))
    numba = f", Numba threads {info['numba_threads']}" if info.get("numba_threads") else ""
    return (f"{where}`{machine_name(info)}`: {info['cpu']}, {info['cores']} cores usable, "
            f"host floors on up to {info['threads']} threads{numba}; Python {info['python']}, {versions}")


def markdown(results) -> str:
    """The full markdown report of a run."""
    floor_name = results.relevant_floor
    out = [f"# gaussheat_gpu benchmarks, {results.date}", "",
           f"Machine: {machine_line(results.machine)}.  ", f"Command: `{results.command}`.", "",
           "Median of warm calls (float32 outputs for gaussheat). *speed-up*: the baseline's median over this "
           "row's. *x floor*: median over the time to "
           + ("allocate and write an output of the workload's size (`write-fresh` below; rows rendering "
              "into a caller's buffer with `out=` are divided by `write-reused`)"
              if floor_name == "write-fresh" else f"the `{floor_name}` floor of the workload's output below")
           + ". *max rel err*: max |out - ref| / max |ref| against the float64 NumPy reference of the same work "
           "(checked before timing). *first call*: the first call in the benchmark process (includes JIT "
           "compilation or cache loading; earlier workloads may have compiled shared code). *rounds*: timed "
           "rounds (x calls per round when a call is short).", "",
           main_table(results), "", "## Floors", "", floors_table(results)]
    if results.first_calls:
        out += ["", "## First call in a new process", "",
                "A fresh interpreter per measurement; cold: empty `NUMBA_CACHE_DIR`; warm: the same cache "
                "directory a second time.", "", first_call_table(results)]
    notes = list(results.notes) + [f"{r.workload} {r.method}: {r.note}" for r in results.rows if r.note]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if results.failures:
        out += ["", "## Failed (no row reported)", ""] + [f"- {f}" for f in results.failures]
    return "\n".join(out) + "\n"


def write_results(results, prefix, directory=RESULTS_DIR) -> tuple[Path, Path]:
    """Write ``<prefix>-<date>.json`` and ``.md`` into ``directory``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{prefix}-{results.date}"
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(results.to_dict(), indent=1, default=str) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


def readme_section(results, md_path) -> str:
    """The README's benchmark section for one results file: machine, table, link to the details."""
    load = results.machine.get("load_average")
    load_text = (f" The 1-minute load average went from {load[0]:.2f} to {load[1]:.2f} during the run on "
                 f"{results.machine['cores']} cores." if load else "")
    return "\n".join([
        f"Measured {results.date} on {machine_line(results.machine)}, with `{results.command}` "
        f"(full results, floors and notes: [{md_path}]({md_path})).{load_text}", "",
        main_table(results)])
