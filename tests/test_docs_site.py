"""The documentation site builds with ``mkdocs build --strict``, and the pages
that restate the code still agree with it.

--strict turns every warning into a failure: a broken link between pages, an
anchor that does not exist, a page missing from the navigation. The build needs
the pinned packages of requirements-docs.txt (``make dev`` installs them); when
mkdocs is absent the test fails rather than skips, so that ``make test`` cannot
pass without checking the docs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kong_pdk.cli import build_parser, build_server_parser

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    # use_directory_urls: false, so that the site works opened from disk (file://).
    request_page = tmp_path / "site" / "pdk" / "kong.request.html"
    assert request_page.is_file()
    html = request_page.read_text(encoding="utf-8")
    # The page is titled as the Lua path, not "Kong.request" from its file name.
    assert "<title>kong.request - kong-pdk-native</title>" in html
    # A type with | in a reference table shows as written, not as a literal \|.
    assert "\\|" not in html and "str | None" in html.replace("&#124;", "|")
    # No signature line runs past what the code block shows without scrolling.
    for block in re.findall(r'<div class="language-python highlight"><pre>(.*?)</pre>', html, re.S):
        text = re.sub(r"<[^>]+>", "", block).replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
        assert max(len(line) for line in text.splitlines()) <= 100, text
    # Search works from disk: the offline plugin bundles the index as a script.
    assert list((tmp_path / "site" / "assets" / "javascripts").glob("*.js"))
    assert (tmp_path / "site" / "search" / "search_index.js").is_file()


def test_every_page_is_in_the_nav() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    listed = set(pages(config["nav"]))
    excluded = set(config.get("exclude_docs", "").split())
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk - excluded - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - on_disk == set(), "nav entries without a page"


def test_cli_page_lists_every_flag_with_its_default() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]

    def flags_cell(row: str) -> str:
        return row.split(" | ")[0]

    for action in build_parser("my-plugin")._actions:
        if action.help == argparse.SUPPRESS:
            continue
        first = re.compile(rf"`{re.escape(action.option_strings[0])}[ `]")
        row = next((r for r in rows if first.search(flags_cell(r))), None)
        assert row is not None, f"{action.option_strings[0]} is not on docs/cli.md"
        for option in action.option_strings:
            assert re.search(rf"`{re.escape(option)}[ `]", flags_cell(row)), f"{option} missing from: {row}"
        default = action.default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and action.nargs != 0:
            assert f"`{default}`" in row, f"default {default!r} of {action.option_strings[0]} not in: {row}"
    assert "`/usr/local/kong`" in text


def test_cli_page_lists_every_flag_of_kong_python_pluginserver() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text[text.index("## `kong-python-pluginserver`") :]
    own = [line for line in section.splitlines() if line.startswith("| `")]
    shared = {action.dest for action in build_parser("my-plugin")._actions}
    for action in build_server_parser()._actions:
        if action.help == argparse.SUPPRESS or (action.dest in shared and action.dest != "socket_name"):
            continue  # the shared flags are in the dedicated server's table, checked above
        row = next((r for r in own if f"`{action.option_strings[0]} " in r or f"`{action.option_strings[0]}`" in r), None)
        assert row is not None, f"{action.option_strings[0]} is not in the kong-python-pluginserver section"
        for option in action.option_strings:
            assert re.search(rf"`{re.escape(option)}[ `]", row.split(" | ")[0]), f"{option} missing from: {row}"
    assert "`python_pluginserver.sock`" in section
