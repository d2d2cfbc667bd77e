"""An error reply carries the request's msgid exactly as it came, whatever its type (issue 9).

Kong's msgids are integers, but a peer that sends another type must get its
msgid back untouched, so that it can match the reply; today every msgid that
is not an unsigned integer comes back as 0.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reliability.peers import RawPeer

from serving import Served

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("msgid", ["7", -5, 3.5, None], ids=["str", "negative", "float", "nil"])
def test_the_error_reply_echoes_an_odd_msgid(serve: Callable[..., Served], msgid: object) -> None:
    served = serve("stalls.py")
    with RawPeer(served.socket) as peer:
        reply = peer.call("plugin.GetStatus", [], msgid=msgid)
        assert isinstance(reply[2], str) and reply[2], f"no error for msgid {msgid!r}: {reply!r:.200}"
        assert type(reply[1]) is type(msgid) and reply[1] == msgid, reply
        # The connection still serves a proper request.
        assert peer.call("plugin.GetStatus", [], msgid=11)[1:3] == [11, None]
