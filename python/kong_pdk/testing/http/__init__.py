"""The HTTP model of the kit: requests, responses, headers, URL arguments and bodies.

``Request`` is what a test sends, ``Response`` what it gets back (or gives as the
upstream's answer), ``ServiceRequest`` what Kong sent upstream (``messages``);
``headers``, ``args``, ``uri`` and ``bodies`` read and write them the way nginx
and Kong do.
"""

from __future__ import annotations

from kong_pdk.testing.http.headers import HeaderInput, Headers
from kong_pdk.testing.http.messages import Body, Request, Response, ServiceRequest

__all__ = ["Body", "HeaderInput", "Headers", "Request", "Response", "ServiceRequest"]
