"""The README and docs/ link only to files that exist, and the README stays an entry page."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_an_entry_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_the_published_comparison_tables_are_what_the_kept_runs_give():
    """README and docs/results.md publish tables recomputed from the kept run files
    (benchmarks/published_tables.py): a page or analysis file that drifted from the data fails."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from published_tables import drifted

    problems = drifted()
    assert not problems, "run .venv/bin/python benchmarks/published_tables.py; drifted: " + ", ".join(problems)


def test_the_drift_check_can_fail(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import published_tables

    page = tmp_path / "results.md"
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert "| mssr | 3 | 1.518 |" in text  # long16's mean final loss at 5%
    page.write_text(text.replace("| mssr | 3 | 1.518 |", "| mssr | 3 | 1.418 |"), encoding="utf-8")
    monkeypatch.setattr(published_tables, "PAGES", (page,))
    monkeypatch.setattr(published_tables, "FILES", ())
    assert published_tables.drifted() == [f"{page}: table long16"]


def test_the_drift_check_reads_csv_numbers_to_nine_digits(tmp_path):
    """Another processor's last digits are not drift; a changed figure is."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from published_tables import _same_file

    kept = tmp_path / "x-intervals.csv"
    kept.write_text("strategy,mean\nmssr,0.00025508900071780923\n")
    assert _same_file(kept, "strategy,mean\nmssr,0.0002550890007178093\n")
    assert not _same_file(kept, "strategy,mean\nmssr,0.000255\n")
    assert not _same_file(kept, "strategy,mean\nfixed,0.00025508900071780923\n")
    assert not _same_file(kept, "strategy,mean\nmssr,0.00025508900071780923\nfixed,1\n")
    assert not _same_file(kept, "strategy,mean\nmssr,nan\n")
    kept.write_text("strategy,mean\nmssr,nan\n")
    assert _same_file(kept, "strategy,mean\nmssr,nan\n")
    assert not _same_file(tmp_path / "missing.csv", "strategy,mean\n")
