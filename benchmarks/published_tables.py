"""The comparison tables the README and docs/results.md publish, recomputed from the kept runs.

    .venv/bin/python benchmarks/published_tables.py           # rewrite the tables and files
    .venv/bin/python benchmarks/published_tables.py --check   # exit 1 if a page drifted from the data

Each published table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in
README.md or docs/results.md; the analysis files beside it (``docs/results/NAME-table.md``,
``-curves.md``, ``-intervals.csv``, ``-runs.csv``) are what ``mssr analyse`` writes for the
kept run directories. tests/test_docs.py runs ``--check``, so a page cannot drift from its data.

* ``long16``: the 11-task comparison, 36 runs in ``docs/results/long16-runs`` (pairs span
  processors and precisions: analysed with ``--allow-mixed``, which the table counts);
* ``abl16``: the ablations on the 5-task stream, 12 runs in ``docs/results/abl16-runs``;
* ``cmp15c``: the first formulation's comparison, of which only the command's ``runs.csv`` was
  kept: t intervals over its 3 seeds without the test rows' part (``mssr.intervals.block_interval``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mssr.intervals import block_interval  # noqa: E402
from pipelines.analysis import analyse  # noqa: E402
from pipelines.tables import markdown_table  # noqa: E402

RESULTS = ROOT / "docs" / "results"
KEPT = {"long16": True, "abl16": False}  # kept run directories: allow mixed pairs?
FILES = ("table.md", "curves.md", "intervals.csv", "runs.csv")
PAGES = (ROOT / "README.md", ROOT / "docs" / "results.md")


def _analysed(name: str, allow_mixed: bool, out: Path) -> str:
    analyse([str(RESULTS / f"{name}-runs")], out, "fixed", "loss_final", detect=0.1, allow_mixed=allow_mixed)
    for f in FILES:  # run directories as kept in the repository, not as read from a temporary copy
        text = (out / f).read_text().replace(str(RESULTS) + "/", "docs/results/")
        (out / f).write_text(text)
    return (out / "curves.md").read_text()


def _resolution_lines(out: Path) -> list[str]:
    """The table's resolution lines of the primary metric, one per strategy and budget."""
    lines, budget = [], ""
    for line in (out / "table.md").read_text().splitlines():
        if line.startswith("budget "):
            budget = line.split(":")[0]
        if ", final loss: " in line and " - fixed" in line:
            lines.append(f"* {budget}: {line}")
    return lines


def cmp15c_table() -> str:
    """Per budget and strategy: AP and final loss (means of 3 seeds), paired t intervals over
    the seeds against fixed."""
    rows = list(csv.DictReader((RESULTS / "cmp15c-runs.csv").open()))
    budgets = sorted({r["budget"] for r in rows if r["budget"] != "-"}, key=float)
    out = []
    for budget in budgets:
        here = [r for r in rows if r["budget"] in (budget, "-")]
        ref = {r["seed"]: r for r in here if r["strategy"] == "fixed"}
        means = {c: sum(float(r[c]) for r in ref.values()) / len(ref) for c in ("final loss", "AP")}
        out.append([f"{float(budget) * 100:g}%", "fixed", f"{means['final loss']:.3f}", "reference"])
        out[-1] += [f"{means['AP']:.3f}", "reference"]
        for strategy in dict.fromkeys(r["strategy"] for r in here if r["strategy"] != "fixed"):
            mine = {r["seed"]: r for r in here if r["strategy"] == strategy}
            seeds = sorted(set(mine) & set(ref))
            cells = [f"{float(budget) * 100:g}%", strategy]
            for col in ("final loss", "AP"):
                d = block_interval([float(mine[s][col]) - float(ref[s][col]) for s in seeds])
                cells += [f"{sum(float(mine[s][col]) for s in seeds) / len(seeds):.3f}", d.text()]
            out.append(cells)
    head = ["budget", "strategy", "final loss", "Δ final loss", "AP", "Δ AP"]
    return "\n".join(markdown_table(head, out)) + "\n"


def tables(work: Path) -> tuple[dict[str, str], dict[Path, str]]:
    """The published blocks by name, and the analysis files by their path in docs/results."""
    blocks, files = {}, {}
    for name, allow_mixed in KEPT.items():
        out = work / name
        curves = _analysed(name, allow_mixed, out)
        blocks[name] = curves + "\n" + "\n".join(_resolution_lines(out)) + "\n"
        blocks[f"{name}-curves"] = curves  # the table alone, for the README
        files.update({RESULTS / f"{name}-{f}": (out / f).read_text() for f in FILES})
    blocks["cmp15c"] = cmp15c_table()
    return blocks, files


def _replace(page: str, name: str, block: str) -> str:
    pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), page)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _cell_equal(kept: str, now: str) -> bool:
    if kept == now:  # text, and nan
        return True
    try:
        return math.isclose(float(kept), float(now), rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return kept == now


def _same_file(path: Path, text: str) -> bool:
    """A CSV's numbers equal to 9 significant digits, any other file as text: the full-precision
    floats of an interval differ in their last digits between processors (vectorised sums add
    in another order), which is not drift; the pages print them rounded."""
    if not path.exists():
        return False
    kept = path.read_text()
    if path.suffix != ".csv":
        return kept == text
    rows_kept, rows_now = list(csv.reader(io.StringIO(kept))), list(csv.reader(io.StringIO(text)))
    return len(rows_kept) == len(rows_now) and all(
        len(a) == len(b) and all(_cell_equal(x, y) for x, y in zip(a, b)) for a, b in zip(rows_kept, rows_now)
    )


def drifted() -> list[str]:
    """What differs between the pages and files and the tables recomputed now (empty: none)."""
    with tempfile.TemporaryDirectory() as tmp:
        blocks, files = tables(Path(tmp))
    problems = [_shown(p) for p, text in files.items() if not _same_file(p, text)]
    for page in PAGES:
        text = page.read_text()
        for name, block in blocks.items():
            if f"<!-- table:{name} -->" in text and _replace(text, name, block) != text:
                problems.append(f"{_shown(page)}: table {name}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when something drifted")
    args = ap.parse_args()
    if args.check:
        problems = drifted()
        for p in problems:
            print(f"drifted from the kept runs: {p}")
        return 1 if problems else 0
    with tempfile.TemporaryDirectory() as tmp:
        blocks, files = tables(Path(tmp))
    for path, text in files.items():
        path.write_text(text)
    for page in PAGES:
        text = page.read_text()
        for name, block in blocks.items():
            text = _replace(text, name, block)
        page.write_text(text)
    print(f"written: {len(files)} analysis files, tables {', '.join(blocks)} in the pages that hold them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
