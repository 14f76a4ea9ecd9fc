"""List gengate's MCP tools through a stdio bridge (mcp-remote), with the `mcp` SDK client.

Usage: python stdio_smoke.py EXPECTED_TOOLS_CSV -- COMMAND [ARGS...]

Spawns COMMAND as a stdio MCP server (the bridge), performs the initialize handshake
(mode="legacy": what stdio desktop hosts do today), lists the tools, and exits 1 unless
every expected tool name is listed. Prints one line with the names it got. Environment
variables named MCP_REMOTE_* are passed on to COMMAND.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

TIMEOUT_SECONDS = 60


async def list_tool_names(command: str, args: list[str]) -> list[str]:
    # The SDK passes only a few "safe" variables to the child; mcp-remote's config dir
    # (where it would keep OAuth state) must reach it so nothing lands in ~/.mcp-auth.
    env = {k: v for k, v in os.environ.items() if k.startswith("MCP_REMOTE_")}
    params = StdioServerParameters(command=command, args=args, env=env)
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with Client(params, mode="legacy", read_timeout_seconds=30) as client:
            result = await client.list_tools()
            return [tool.name for tool in result.tools]


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    expected = [name for name in argv[0].split(",") if name]
    command, *args = argv[2:]
    names = anyio.run(list_tool_names, command, args)
    missing = [name for name in expected if name not in names]
    print(f"tools: {', '.join(names)}")
    if missing:
        print(f"missing tools: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
