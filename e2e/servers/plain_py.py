"""An MCP server with no auth code at all, written as the Python SDK's README does it
(`MCPServer`, `@mcp.tool()`, `mcp.run(transport="streamable-http")`: stateful sessions, answers
as server-sent events). `tessera gateway` protects it (e2e/run starts one in front of it).

Tools: `search_docs` and `delete_file` echo their arguments; `long_task` reports `steps`
progress notifications (1,000 by default), pausing `pause_ms` after every hundredth (so a client
can tell a stream from a buffered answer), then returns; `secret_admin` is a tool the gateway's
policy never names (so it is denied to every token).

    python plain_py.py --port 3001        # serves http://127.0.0.1:3001/mcp
"""

import argparse
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

mcp = MCPServer("tessera-e2e-plain-py")


@mcp.tool()
def search_docs(query: str, limit: int = 10, filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search the docs (echoes its arguments)."""
    return {"tool": "search_docs", "query": query, "limit": limit, "filters": filters}


@mcp.tool()
def delete_file(path: str) -> dict[str, Any]:
    """Delete a file (echoes its argument; deletes nothing)."""
    return {"tool": "delete_file", "path": path}


@mcp.tool()
async def long_task(ctx: Context, steps: int = 1000, pause_ms: int = 0) -> dict[str, Any]:
    """Report `steps` progress notifications (a pause after every hundredth), then return."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
        if pause_ms and i % 100 == 0:
            await anyio.sleep(pause_ms / 1000)
    return {"tool": "long_task", "steps": steps}


@mcp.tool()
def secret_admin() -> dict[str, Any]:
    """A tool the gateway's policy never names."""
    return {"tool": "secret_admin"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    mcp.run(transport="streamable-http", host="127.0.0.1", port=args.port)
