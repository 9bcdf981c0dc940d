"""Regenerate README.md's benchmark section from the newest results files.

Replaces only what lies between ``<!-- bench:start -->`` and ``<!-- bench:end -->``: the newest
CPU results (``bench/results/<machine>-<date>.json``) and, when there is one, the newest GPU
results (``gpu-<device>-<date>.json``), each naming its machine. Tiny runs are ignored.

Usage::

    python bench/readme_table.py [--readme README.md] [--results-dir bench/results] [--print]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def newest_results(directory) -> dict:
    """The newest non-tiny results file of each kind, ``{"cpu": path, "gpu": path}`` (kinds found only).

    Newest by the date in the file's JSON, then by modification time.
    """
    newest = {}
    for path in Path(directory).glob("*.json"):
        if path.stem.endswith("-tiny") or "-tiny-" in path.stem:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "rows" not in data:  # other tables (D1, GPU counts) are lists
            continue
        date = data.get("date", "")
        kind = "gpu" if path.name.startswith("gpu-") else "cpu"
        key = (date, path.stat().st_mtime)
        if kind not in newest or key > newest[kind][0]:
            newest[kind] = (key, path)
    return {kind: path for kind, (_, path) in newest.items()}


def section(directory, root=ROOT) -> str:
    """The markdown that goes between the markers."""
    found = newest_results(directory)
    if not found:
        return "(no results yet: run `make bench`)"
    parts = []
    for kind in ("cpu", "gpu"):
        if kind in found:
            path = found[kind]
            results = report.Results.from_dict(json.loads(path.read_text()))
            md = path.with_suffix(".md")
            link = md.relative_to(root).as_posix() if md.is_relative_to(root) else md.as_posix()
            parts.append(("### GPU\n\n" if kind == "gpu" else "") + report.readme_section(results, link))
    return "\n\n".join(parts)


def replace_between_markers(text, body) -> str:
    """``text`` with everything between the markers replaced by ``body``.

    Raises
    ------
    ValueError
        A marker is missing or they are out of order.
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README needs the markers {START} and {END}, in that order")
    return text[:start + len(START)] + "\n" + body.strip() + "\n" + text[end:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--results-dir", default=str(report.RESULTS_DIR))
    parser.add_argument("--print", action="store_true", help="print the section instead of writing README")
    args = parser.parse_args(argv)
    body = section(args.results_dir)
    if args.print:
        print(body)
        return 0
    readme = Path(args.readme)
    try:
        updated = replace_between_markers(readme.read_text(), body)
    except ValueError as exc:
        print(f"{readme}: {exc}", file=sys.stderr)
        return 1
    readme.write_text(updated)
    print(f"updated the benchmark section of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
