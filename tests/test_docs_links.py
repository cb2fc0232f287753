"""Every relative link and #anchor in README.md and docs/*.md resolves, as GitHub renders them.

Anchors are checked against GitHub's heading ids (lower-cased text without punctuation, spaces as
hyphens, ``-1``, ``-2``... for repeats), so a renamed heading breaks the links that point at it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: headings and links there are not markdown."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def github_slug(heading: str) -> str:
    """The id GitHub gives a heading: rendered text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"<[^>]+>", "", heading)  # inline HTML
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = _CODE_SPAN.sub(lambda m: m.group(2).strip(), text)
    text = text.replace("*", "")  # emphasis markers
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of ``page`` whose file or anchor does not exist, as 'page:line: target (why)'."""
    problems = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if _SCHEME.match(target):
                continue  # http(s), mailto: not checked offline
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(root)}:{number}: {target}"
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(root):
                problems.append(f"{where} (points outside the repository)")
                continue
            if not resolved.exists():
                problems.append(f"{where} (no such file)")
                continue
            if anchor:
                if resolved.suffix != ".md":
                    problems.append(f"{where} (anchor into a non-markdown file)")
                elif anchor not in anchors(resolved):
                    problems.append(f"{where} (no heading with id '{anchor}' in {resolved.relative_to(root)})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for _, line in prose_lines(readme) for t in _LINK.findall(line)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README's Documentation list does not link docs/{page.name}"


@pytest.mark.parametrize("heading, slug", [
    ("`ftcloud platform [--cached]` / `ftcloud platform use STACK|local`",
     "ftcloud-platform---cached--ftcloud-platform-use-stacklocal"),
    ("For platform teams: deploying the ftcloud platform (`infra/`)",
     "for-platform-teams-deploying-the-ftcloud-platform-infra"),
    ("Batching, caching and the knobs", "batching-caching-and-the-knobs"),
    ("`hf_token_secret_arn` and [links](x.md)", "hf_token_secret_arn-and-links"),
])
def test_slugs_follow_github(heading, slug):
    assert github_slug(heading) == slug


def test_the_checker_finds_missing_files_anchors_and_repeated_headings(tmp_path):
    (tmp_path / "docs").mkdir()
    target = tmp_path / "docs" / "b.md"
    target.write_text("# Title\n\n## Part\n\n## Part\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text(
        "[ok](b.md#part-1) [ok](b.md#title) [ok](#here) [web](https://example.com/x#y)\n"
        "# Here\n"
        "[gone](missing.md) [bad anchor](b.md#not-a-heading) [code](b.md#part-2)\n"
        "`[not a link](nowhere.md)`\n"
        "[escape](../../outside.md)\n"
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "missing.md", "b.md#not-a-heading", "b.md#part-2", "../../outside.md",
    ], problems
