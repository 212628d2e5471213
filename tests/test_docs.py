"""The documentation sources: what the site must hold (`make docs` builds it)."""

import re
from pathlib import Path

import ase_flatten

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _sources():
    return [
        path
        for path in DOCS.rglob("*")
        if path.suffix in {".md", ".rst", ".py"} and "_build" not in path.parts
    ]


def test_docs_name_no_tracker_items():
    pattern = re.compile(r"\bissues?\s*#?\d+|#\d{1,4}\b", re.IGNORECASE)
    found = [
        f"{path.relative_to(DOCS)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_api_reference_lists_the_public_api():
    index = (DOCS / "api" / "index.rst").read_text()
    listed = set(re.findall(r"^\s+~ase_flatten\.[\w.]+\.(\w+)$", index, re.MULTILINE))
    assert listed == set(ase_flatten.__all__) - {"__version__"}


def test_every_page_is_reachable_from_the_index():
    toctrees = "\n".join(
        path.read_text() for path in (DOCS / "index.md", DOCS / "api" / "index.rst")
    )
    pages = {
        str(path.relative_to(DOCS).with_suffix(""))
        for path in DOCS.glob("*.md")
        if path.name != "index.md"
    } | {f"tutorials/{path.stem}" for path in (DOCS / "tutorials").glob("*.md")}
    missing = {page for page in pages if not re.search(rf"^{page}$", toctrees, re.M)}
    assert missing == set()
