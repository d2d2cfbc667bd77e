"""Every file the repository's prose cites exists in the repository.

Docs (every tracked ``*.md``) and comments in ``src/`` and ``python/`` name files
such as ``docs/protocol.md`` or ``kong_pdk/runners.py``; a renamed or never-added
file leaves readers with a dead reference. This test finds those names and checks
each against the tracked files.

How a citation is resolved:

* a Markdown link target ``[text](path)`` is resolved as a browser or MkDocs
  would, relative to the citing file;
* any other mention is accepted when some tracked file's path ends with it
  (``service.rs`` is ``src/service.rs``, ``kong_pdk/cli.py`` is
  ``python/kong_pdk/cli.py``).

Only names with an extension of our own kinds of files are citations; names of
the reader's own files (``my_plugin.py``) are listed in ``USER_FILES``. The test
also checks that every "protocol.md §N" cited exists as a heading of
``docs/protocol.md``.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Extensions of files this repository holds; other names (``kong.conf``,
# ``handler.lua``, ``error.log``) are someone else's files.
CITED = r"md|py|pyi|rs|toml|json|yml|yaml|sh"
MENTION = re.compile(rf"(?<![\w./-])((?:\.\.?/)*[A-Za-z0-9_][\w.-]*(?:/[\w.-]+)*\.(?:{CITED}))(?![\w/])")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
PROTOCOL_SECTION = re.compile(r"protocol\.md((?:[^\S\n]|[,;§\"\w.-])*)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")

# Files of the reader, in usage examples: not ours to have.
USER_FILES = {
    "my_plugin.py",
    "my-plugin.py",
    "my-plugin.json",
    "PLUGIN.py",
    "plugin.py",
    "test_my_plugin.py",
    "conftest.py",
    "setup.py",
    "mkdocs.yml",  # only when quoted as MkDocs' own default; ours is checked as a file
}


# Upper-case words in a file name stand for the user's own names.
PLACEHOLDER = re.compile(r"(^|_)[A-Z]{3,}($|_)")


@cache
def tracked() -> frozenset[str]:
    """Paths git tracks, plus files added but not yet committed."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return frozenset(p for p in out.splitlines() if (ROOT / p).exists())


def exists_by_suffix(cited: str) -> bool:
    name = cited.lstrip("./")
    return any(p == name or p.endswith("/" + name) for p in tracked())


def exists_relative(citing: str, target: str) -> bool:
    path = (ROOT / PurePosixPath(citing).parent / target).resolve()
    return path.exists() and (path.is_dir() or str(path.relative_to(ROOT)) in tracked())


def rust_comments(text: str) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(text.splitlines(), 1):
        at = line.find("//")
        if at >= 0:
            yield n, line[at + 2 :]


def python_comments(text: str) -> Iterator[tuple[int, str]]:
    """``#`` comments and docstrings: the prose of a Python file."""
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                doc = body[0].value.value
                if isinstance(doc, str):
                    for k, line in enumerate(doc.splitlines()):
                        yield body[0].lineno + k, line
    # ``#:`` attribute docs are comments too: covered above.


def prose(path: str) -> Iterator[tuple[int, str]]:
    text = (ROOT / path).read_text(encoding="utf-8")
    if path.endswith(".rs"):
        yield from rust_comments(text)
    elif path.endswith((".py", ".pyi")):
        yield from python_comments(text)
    else:
        yield from enumerate(text.splitlines(), 1)


def sources() -> list[str]:
    """The files whose prose is checked: every Markdown file, and src/, python/."""
    return sorted(
        p
        for p in tracked()
        if p.endswith(".md") or (p.startswith(("src/", "python/")) and p.endswith((".rs", ".py", ".pyi")))
    )


def dead_citations(path: str) -> list[str]:
    dead = []
    for n, line in prose(path):
        links = set()
        if path.endswith(".md"):
            for target in LINK.findall(line):
                if "://" in target or target.startswith(("mailto:", "/")):
                    continue
                links.add(target)
                if not exists_relative(path, target):
                    dead.append(f"{path}:{n}: link to {target}")
        for cited in MENTION.findall(line):
            if cited in links or cited in USER_FILES or PurePosixPath(cited).name in USER_FILES:
                continue
            # A template name (`NAME.py`, `test_NAME.py`): a file the user makes.
            if PLACEHOLDER.search(PurePosixPath(cited).stem):
                continue
            if not exists_by_suffix(cited):
                dead.append(f"{path}:{n}: cites {cited}")
    return dead


@pytest.mark.parametrize("path", sources())
def test_cited_files_exist(path: str) -> None:
    dead = dead_citations(path)
    assert not dead, "cited files that are not in the repository:\n" + "\n".join(dead)


def protocol_headings() -> set[str]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)[. ]", text, re.MULTILINE))


def test_cited_protocol_sections_exist() -> None:
    headings = protocol_headings()
    missing = []
    for path in sources():
        if path == "docs/protocol.md":
            continue
        for n, line in prose(path):
            for tail in PROTOCOL_SECTION.findall(line):
                for section in SECTION.findall(tail):
                    if section not in headings:
                        missing.append(f"{path}:{n}: protocol.md §{section}")
    assert not missing, "sections cited but absent from docs/protocol.md:\n" + "\n".join(missing)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The matchers find what they must: a dead mention, a dead link, a live one."""
    assert MENTION.findall("see design.md and src/service.rs, not example.com") == ["design.md", "src/service.rs"]
    assert LINK.findall("[a](docs/x.md#part) [b](https://e.org/y.md)") == ["docs/x.md", "https://e.org/y.md"]
    assert exists_by_suffix("service.rs") and exists_by_suffix("kong_pdk/cli.py")
    assert not exists_by_suffix("design.md") and not exists_by_suffix("reference/protocol.md")
    assert exists_relative("docs/testing.md", "pdk/README.md")
    assert not exists_relative("README.md", "pdk/README.md")
    assert "5.2.5" in protocol_headings() and "11.2" in protocol_headings()
    assert SECTION.findall(PROTOCOL_SECTION.findall('(protocol.md §2 "Reading", §3.1)')[0]) == ["2", "3.1"]
