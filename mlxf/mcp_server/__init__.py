"""The MCP server: the platform's models, RAG, workflows and jobs as Model Context Protocol tools and resources,
over streamable HTTP (``python -m mlxf.mcp_server``, the Procfile's ``mcp`` process).

Every tool and resource is a call of the platform's HTTP API made with the caller's own bearer key, so keys,
scopes, ownership and rate limits are the API's, applied once.
"""
