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


ROOT = DOCS.parent
#: markdown links and images: [text](target) and ![alt](target)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(path):
    """The relative link targets of a markdown file, without their #fragment."""
    targets = []
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor of the same page
            targets.append(target.split("#")[0])
    return targets


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size <= 8192, f"README.md is {size} bytes; move detail into docs/"


def test_readme_and_benchmarks_links_point_to_files():
    missing = [
        f"{name}: {target}"
        for name in ("README.md", "BENCHMARKS.md")
        for target in _relative_links(ROOT / name)
        if not (ROOT / target).exists()
    ]
    assert _relative_links(ROOT / "README.md"), "README.md links to no file"
    assert missing == []


def _slug(heading):
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_benchmarks_contents_anchors_exist():
    text = (ROOT / "BENCHMARKS.md").read_text()
    headings = {
        _slug(line.lstrip("#"))
        for line in re.sub(r"```.*?```", "", text, flags=re.S).splitlines()
        if re.match(r"^#{1,6} ", line)
    }
    anchors = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(anchors) >= 7  # one per topic
    assert [anchor for anchor in anchors if anchor not in headings] == []


def test_product_text_names_no_tracker_sessions_or_helpers():
    pattern = re.compile(
        r"\bissues?\s*#?\d+|#\d{1,4}\b|\b(sessions?|helpers?|trackers?)\b",
        re.IGNORECASE,
    )
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *_sources()]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
