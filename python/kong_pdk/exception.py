"""Exceptions a plugin can see.

They are plain Python classes (not defined in Rust) so that they pickle across
worker processes and so that ``except`` clauses in plugins can name them.
"""

from __future__ import annotations

__all__ = ["PDKException", "PluginServerException", "PluginExit", "EventAbandoned"]


class PDKException(Exception):
    """A PDK call failed.

    Raised by PDK calls when the server runs with python-style errors
    (``--no-lua-style`` or a plugin that opts in); in lua style the same error
    is returned as the second element of the ``(value, err)`` tuple instead.
    """


class PluginServerException(Exception):
    """The plugin server cannot do what was asked (bad plugin, bad configuration)."""


class EventAbandoned(PDKException):
    """Kong stopped answering this event (it timed out, errored or the worker died).

    Raised inside the handler by the PDK call that was waiting, so the handler
    unwinds instead of waiting forever (docs/protocol.md §5.2.5).
    """


class PluginExit(BaseException):
    """Unwinds a handler after ``kong.response.exit`` / ``kong.response.error``.

    Kong never resumes an event after a terminal call (docs/protocol.md §5.2.3), so
    the server stops running the handler's code right there. It derives from
    ``BaseException`` so that a plugin's ``except Exception`` does not swallow it;
    ``finally`` blocks and context managers still run.
    """
