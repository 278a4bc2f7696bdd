"""The repository stands alone: no tracked Python or Markdown file cites a tracker
number or a design document kept outside the repository. A reader follows every
reference they meet; one that leads nowhere says the rule should have been written
in place."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What a reader of this repository cannot follow. Built so that this file does not
#: match itself.
OUTSIDE_REFERENCES = re.compile("|".join((
    r"\bissue \d+",  # a tracker number
    re.escape(".." + "/shared"),  # the documents beside the repository
    r"\bDESIGN(?:\.md| §)",
    r"\bNETSUITE\.md",
)), re.IGNORECASE)


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "*.py", "*.md"], cwd=ROOT,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.decode().split("\0") if name]


def outside_references(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if OUTSIDE_REFERENCES.search(line):
            found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_the_pattern_catches_what_it_is_for() -> None:
    # Each example is split in two, so that this tracked file passes its own test.
    assert OUTSIDE_REFERENCES.search("see issue" + " 12")
    assert OUTSIDE_REFERENCES.search("(Issue" + " 3 item 4)")
    assert OUTSIDE_REFERENCES.search("in .." + "/shared/notes")
    assert OUTSIDE_REFERENCES.search("(DESIGN" + " §4.5)")
    assert OUTSIDE_REFERENCES.search("see NETSUITE" + ".md")
    assert not OUTSIDE_REFERENCES.search("the issuer issued 12 tokens; issue_token()")


def test_no_tracked_file_cites_a_tracker_number_or_an_outside_document() -> None:
    files = tracked_files()
    assert any(path.name == "README.md" for path in files)
    found = [hit for path in files if path.exists() for hit in outside_references(path)]
    assert found == []
