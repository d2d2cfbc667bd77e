"""``kong-pdk new NAME``: the three files a new plugin starts from.

* ``NAME.py``: a typed plugin (passes ``mypy --strict`` and basedpyright strict)
  that sets a response header, runnable by Kong as it is;
* ``test_NAME.py``: its tests with the kit's ``kong`` fixture (pytest);
* ``NAME.kong.conf``: the lines of ``kong.conf`` that make Kong start it.

The generated tests pass as generated; tests/test_command.py checks that.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["NAME_RE", "scaffold_files", "write_scaffold"]

#: Plugin names Kong accepts and that make a valid kong.conf key.
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")

PLUGIN = '''#!/usr/bin/env python3
"""{name}: adds a greeting header to every response.

Serve it to Kong with the lines of {name}.kong.conf; test it with ``pytest``
(test_{module}.py). ``python {name}.py --dump`` prints what Kong's query
command reads.
"""

import kong_pdk.pdk.kong as kong
from kong_pdk.typing import PluginConfig, PluginSchema, Priority, Version

Schema: PluginSchema = (
    {{"message": {{"type": "string", "default": "hello", "required": True}}}},
)
version: Version = "0.1.0"
priority: Priority = 0


class Plugin:
    def __init__(self, config: PluginConfig) -> None:
        self.message = str(config["message"])

    def access(self, kong: kong.kong) -> None:
        host, err = kong.request.get_host()
        if err is not None:
            kong.log.warn("no host: ", err)
        kong.response.set_header("x-{name}", f"{{self.message}} from {{host}}")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("{name}", Plugin, version, priority, Schema)
'''

TEST = '''"""Tests of {name}.py, run by the kong_pdk test kit (pytest finds the ``kong`` fixture)."""

import pytest

from kong_pdk.testing.pytest_plugin import KongKit
from kong_pdk.testing.schema import ConfigError


def test_greets_with_the_configured_message(kong: KongKit) -> None:
    plugin = kong.plugin("{name}.py", {{"message": "hi"}})
    res = plugin.http("GET", "http://example.com/")
    assert res.client_response is not None
    assert res.client_response.status == 200
    assert res.client_response.headers["x-{name}"] == "hi from example.com"
    assert res.service_request is not None  # proxied as usual


def test_message_defaults_to_hello(kong: KongKit) -> None:
    res = kong.plugin("{name}.py").http("GET", "http://api.test/")
    assert res.client_response is not None
    assert res.client_response.headers["x-{name}"] == "hello from api.test"


def test_kong_refuses_a_message_that_is_not_a_string(kong: KongKit) -> None:
    with pytest.raises(ConfigError, match="config.message"):
        kong.plugin("{name}.py", {{"message": 42}})
'''

CONF = """# Lines for kong.conf that make Kong start the {name} plugin.
# Kong runs the start command to serve it, and the query command to learn its schema.
pluginserver_names = {name}
pluginserver_{key}_start_cmd = {python} {path} -p /usr/local/kong
pluginserver_{key}_query_cmd = {python} {path} --dump
plugins = bundled,{name}
"""


def scaffold_files(name: str, directory: Path, python: str | None = None) -> dict[Path, str]:
    """The files ``kong-pdk new`` writes for ``name`` into ``directory``, path -> text."""
    if not NAME_RE.match(name):
        raise ValueError(
            f"{name!r} is not a plugin name: use lowercase letters and digits, words joined by - or _"
        )
    module = name.replace("-", "_")
    plugin = directory / f"{name}.py"
    return {
        plugin: PLUGIN.format(name=name, module=module),
        directory / f"test_{module}.py": TEST.format(name=name),
        directory / f"{name}.kong.conf": CONF.format(
            name=name, key=module, python=python or sys.executable, path=plugin.resolve()
        ),
    }


def write_scaffold(name: str, directory: Path, python: str | None = None) -> list[Path]:
    """Writes the files of ``scaffold_files``; refuses to overwrite any."""
    files = scaffold_files(name, directory, python)
    existing = [p for p in files if p.exists()]
    if existing:
        raise FileExistsError(f"not overwriting {', '.join(map(str, existing))}")
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    files_written = list(files)
    files_written[0].chmod(0o755)
    return files_written
