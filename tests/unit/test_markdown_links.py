"""The docs stand alone: every relative link and anchor in the repository's Markdown resolves, and no
text names a Markdown file the repository does not hold (tools/check_markdown_links.py, no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import check_markdown_links as checker


def test_every_link_and_anchor_in_the_repository_resolves() -> None:
    assert checker.broken_links() == []


def test_no_text_names_a_markdown_file_beside_the_repository() -> None:
    assert checker.dangling_mentions() == []


def repository(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # noqa: S603, S607 -- git from PATH
    return tmp_path


def test_the_checker_catches_a_missing_file_a_missing_anchor_and_a_file_beside_the_repo(
    tmp_path: Path,
) -> None:
    root = repository(
        tmp_path,
        {
            "README.md": "# Top\nSee [the guide](docs/guide.md#set-up), [gone](docs/gone.md), "
            "[nowhere](docs/guide.md#no-such-heading), [web](https://example.com/x.md) and "
            "[here](#top).\n```\n[in code](not/checked.md)\n```\n",
            "docs/guide.md": "# Guide\n## Set up\nAs `../beside/NOTES.md` says.\n",
        },
    )
    assert checker.broken_links(root) == [
        "README.md:2: docs/gone.md: no such file",
        "README.md:2: docs/guide.md#no-such-heading: no heading #no-such-heading in docs/guide.md",
    ]
    assert checker.dangling_mentions(root) == [
        "README.md:2: docs/gone.md: names a file not in the repository",
        "README.md:4: not/checked.md: names a file not in the repository",
        "docs/guide.md:3: ../beside/NOTES.md: names a file not in the repository",
    ]


def test_headings_slug_as_github_does() -> None:
    assert checker.slug("Amounts and the 99,999,999 bound") == "amounts-and-the-99999999-bound"
    assert checker.slug("The soak (`make soak`)") == "the-soak-make-soak"
