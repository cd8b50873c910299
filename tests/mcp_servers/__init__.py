"""Small MCP servers built with the official SDK, for the MCP client tests.

No module here is named after a library (`mcp.py`, `http.py`): `demo_server.py` runs as a
script, which puts this folder first on its `sys.path`.
"""
