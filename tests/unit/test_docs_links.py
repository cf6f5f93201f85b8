"""Every relative link in the repository's Markdown points at a file that exists, and at a heading
that exists when it names one.

Why: the README sends readers to the commands and reports behind its numbers (docs/results.md,
reports/, benchmarks/RESULTS.md), and those pages move and get renamed. A link that lands nowhere
turns a claim someone can reproduce into one they cannot find, and nothing else would notice.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^()\s]+)\)")  # [text](target): inline links, no titles used here
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    kept = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks (a shell comment there is no heading)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors GitHub gives the headings of ``path`` (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[str]:
    """Relative link targets in ``path``'s prose (URLs and mail addresses left out)."""
    targets = []
    for line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            targets.append(target)
    return targets


def broken(path: Path, target: str) -> str | None:
    """Why ``target``, linked from ``path``, leads nowhere (None if it is fine)."""
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"{file_part} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{file_part or dest.name} has no heading with the anchor #{anchor}"
    return None


def test_slug_follows_github() -> None:
    assert slug("`azure_shuffled.py`: the Azure code trace in other orders") == (
        "azure_shuffledpy-the-azure-code-trace-in-other-orders"
    )
    assert slug("Measured on this project's machine (2 shared cores)") == (
        "measured-on-this-projects-machine-2-shared-cores"
    )
    assert slug("1M-job replay after the standing pool became the default") == (
        "1m-job-replay-after-the-standing-pool-became-the-default"
    )


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n## A part\n\n```sh\n# not a heading\n```\n", encoding="utf-8")
    assert broken(page, "#a-part") is None
    assert broken(page, "#top") is None
    assert broken(page, "#not-a-heading") is not None
    assert broken(page, "missing.md") == "missing.md does not exist"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    problems = [f"({target}): {why}" for target in links(path) if (why := broken(path, target))]
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)
