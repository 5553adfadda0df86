"""The documentation's cross-references: every "docs/MATH.md section N" / "§N.M" citation in the
repository points at a section that exists in docs/MATH.md."""
import re
import subprocess
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
MATH = ROOT / "docs" / "MATH.md"

CITATION = re.compile(r"docs/MATH\.md(?:,?\s+(?:section\s+|§)(\d+(?:\.\d+)?))?")
BARE = re.compile(r"(?<![\w/])MATH\.md")  # "MATH.md" not preceded by "docs/"


def math_sections() -> set[str]:
    """Section numbers of docs/MATH.md: "## N. Title" and "### N.M Title"."""
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", MATH.read_text(), flags=re.M)
    return set(heads)


def tracked_text_files() -> list[Path]:
    """The repository's text files: git's list in a checkout, else every file under the root
    outside hidden and cache folders (an unpacked release has no .git)."""
    keep = (".py", ".md", ".txt", ".toml", ".html", "")
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        paths = [ROOT / p for p in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if not any(part.startswith(".") or part == "__pycache__"
                                                        for part in p.relative_to(ROOT).parts)]
    return [p for p in paths if p.suffix in keep and p.is_file()]


def citations() -> list[tuple[str, int, str, str | None]]:
    """(file, line, text, section or None) for every mention of MATH.md outside docs/MATH.md."""
    found = []
    for path in tracked_text_files():
        if path in (MATH, Path(__file__).resolve()):  # the reference itself, and this checker's examples
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if "MATH.md" not in line:
                continue
            rel = str(path.relative_to(ROOT))
            for m in BARE.finditer(line):
                found.append((rel, n, line.strip(), "bare"))
            for m in CITATION.finditer(line):
                found.append((rel, n, line.strip(), m.group(1)))
    return found


def test_math_md_has_numbered_sections():
    sections = math_sections()
    assert {str(k) for k in range(9)} <= sections, sorted(sections)
    for sub in ("2.3", "3.3", "4.3", "4.5", "7.2", "8.1", "8.4"):
        assert sub in sections


def test_every_citation_points_at_an_existing_section():
    sections = math_sections()
    found = citations()
    assert len(found) >= 25, f"expected the code's citations, found {len(found)}"
    bad = [f"{f}:{n}: {t}" for f, n, t, s in found if s == "bare" or (s is not None and s not in sections)]
    assert not bad, "citations of a missing section, or of MATH.md without docs/:\n" + "\n".join(bad)


def test_citation_checker_catches_a_wrong_section(tmp_path):
    """The checker itself: a citation of a section that does not exist is caught."""
    sections = math_sections()
    m = CITATION.search("see docs/MATH.md section 42 and docs/MATH.md §4.5")
    assert m.group(1) == "42" and "42" not in sections
    assert [x.group(1) for x in CITATION.finditer("docs/MATH.md §4.5, docs/MATH.md")] == ["4.5", None]
    assert BARE.search("(MATH.md section 3)") and not BARE.search("(docs/MATH.md section 3)")


def test_math_md_cites_no_team_material():
    text = MATH.read_text()
    assert "shared/" not in text and "../" not in text
