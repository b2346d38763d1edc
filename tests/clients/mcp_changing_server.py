"""A stdio MCP server (official Python SDK) whose tool list changes: calling `grow` adds the
tool `extra` and sends `notifications/tools/list_changed` (tests/all/tools.rs)."""

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("changing")


def extra(x: int) -> int:
    """Doubles x (added by grow)."""
    return x * 2


@server.tool()
async def grow(ctx: Context) -> str:
    """Adds the tool `extra`."""
    server.add_tool(extra, name="extra")
    await ctx.session.send_tool_list_changed()
    return "added extra"


server.run("stdio")
