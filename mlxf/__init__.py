"""Clients of the platform's HTTP API: the ``mlxf`` command line and the MCP server.

They reach the platform only over HTTP (never ``models``, ``tasks``, ``web`` or ``rag``), so API keys, scopes,
ownership and rate limits apply to them exactly as to any other client.
"""
