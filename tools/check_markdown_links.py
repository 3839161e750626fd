"""Check every relative link and anchor in the repository's Markdown, with no network.

    python tools/check_markdown_links.py          # exit 1 and one line per broken link

A link is `[text](target)` or `[text]: target`. Web links (http, https, mailto) are left alone; a
relative one must name a file or folder in the repository, and its `#anchor` a heading of that file
(GitHub's slugs) or an explicit `<a id>`. And any Markdown file named in the repository's text
(prose, code spans, docstrings) must exist in it. Part of `make test` (tests/unit/test_markdown_links.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
_INLINE = re.compile(r"(?<!\!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?\s*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
_EXTERNAL = ("http://", "https://", "mailto:", "tel:")


def markdown_files(root: Path = ROOT) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "*.md"],  # noqa: S607 -- git from PATH
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return sorted(root / name for name in listed if name and (root / name).is_file())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set(_EXPLICIT_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def links(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    without_code = _FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    without_code = _CODE.sub(lambda match: " " * len(match.group(0)), without_code)
    found = []
    for pattern in (_INLINE, _IMAGE, _REFERENCE):
        for match in pattern.finditer(without_code):
            found.append((without_code.count("\n", 0, match.start()) + 1, match.group(1)))
    return sorted(found)


def broken_links(root: Path = ROOT) -> list[str]:
    problems = []
    for path in markdown_files(root):
        for line, target in links(path):
            problem = _check(root, path, target)
            if problem:
                problems.append(f"{path.relative_to(root)}:{line}: {target}: {problem}")
    return problems


def _check(root: Path, source: Path, target: str) -> str | None:
    if target.startswith(_EXTERNAL):
        return None
    file_part, _, anchor = target.partition("#")
    destination = (source.parent / unquote(file_part)).resolve() if file_part else source
    if not destination.is_relative_to(root):
        return "points outside the repository"
    if not destination.exists():
        return "no such file"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"no heading #{anchor} in {destination.relative_to(root)}"
    return None


# A Markdown file named anywhere (a docstring, a comment, prose, a code span) must be in the repository:
# the docs stand alone, so nothing may send a reader to a file beside it.
_MENTION = re.compile(r"(?<![\w/.-])((?:\.\./|\./)*[\w.-]+(?:/[\w.-]+)*\.md)\b")
_MENTIONING = ("*.md", "*.py", "*.yaml", "*.yml", "*.toml", "Makefile")
_NOT_SCANNED = {"tests/unit/test_markdown_links.py"}  # the checker's own test names made-up files


def dangling_mentions(root: Path = ROOT) -> list[str]:
    listed = subprocess.run(  # noqa: S603 -- fixed arguments
        ["git", "ls-files", "-co", "--exclude-standard", *_MENTIONING],  # noqa: S607 -- git from PATH
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    files = [root / name for name in listed if name and name not in _NOT_SCANNED and (root / name).is_file()]
    names = {path.name for path in markdown_files(root)}
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for match in _MENTION.finditer(text):
            mention = match.group(1)
            here = (path.parent / mention).resolve()
            if here.is_relative_to(root) and here.exists():
                continue
            if (root / mention).exists() or ("/" not in mention and mention in names):
                continue
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"{path.relative_to(root)}:{line}: {mention}: names a file not in the repository")
    return problems


def main() -> int:
    problems = broken_links() + dangling_mentions()
    for problem in problems:
        print(problem)
    files = len(markdown_files())
    print(f"markdown links: {files} files, {len(problems)} broken", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
