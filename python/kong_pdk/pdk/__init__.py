"""The Kong PDK as seen from Python plugins.

``kong_pdk.pdk.kong`` holds the typed namespaces (generated), ``functions`` the
table of RPC-callable functions (generated), and ``pdk-api.json`` the data both
are generated from (``scripts/gen_pdk.py``).
"""
