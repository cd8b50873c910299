"""Tools from MCP servers (MCP_CONFIG, the `.mcp.json` format), next to the built-ins.

Named `mcp_servers`, not `mcp`, so that nothing can hide the SDK's own `mcp` package.
"""

from core.tools.mcp_servers.config import Approval, ServerConfig, load_config
from core.tools.mcp_servers.connection import McpOptions, Status
from core.tools.mcp_servers.manager import (
    McpManager,
    McpTool,
    ServerReport,
    describe_pending,
    render_report,
)
from core.tools.mcp_servers.render import describe_call, exposed_name, render_result

__all__ = [
    "Approval",
    "McpManager",
    "McpOptions",
    "McpTool",
    "ServerConfig",
    "ServerReport",
    "Status",
    "describe_call",
    "describe_pending",
    "exposed_name",
    "load_config",
    "render_report",
    "render_result",
]
