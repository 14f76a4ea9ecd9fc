"""Property: no arguments, however odd, make an MCP tool answer 5xx or "internal error"."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.catalog.catalog import load_catalog
from mcp_server.server import tool_specs
from tests.conftest import make_customer
from tests.support.apps import runtime_of

SPECS = {spec.name: spec for spec in tool_specs(load_catalog())}

_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\u0000", "a\u0000b", "\ud800", "x\udfff", "task_", "1e23"]),
    st.sampled_from(load_catalog().ids),
)
_hostile = st.sampled_from(["", " ", "\u0000", "a\u0000b", "\ud800", "x\udfff", "task_\u0000"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _texts,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_texts, inner, max_size=4)
    ),
    max_leaves=8,
)


def _arguments(tool: str) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly the tool's own argument names with hostile values, now and then a stray name."""
    known = sorted(SPECS[tool].properties) or ["x"]
    values = st.one_of(_hostile, _values)
    own = st.dictionaries(st.sampled_from(known), values, max_size=5)
    stray = st.dictionaries(_texts, values, max_size=1)
    return st.one_of(own, own, own, st.builds(lambda a, b: {**a, **b}, own, stray))


@pytest.mark.parametrize("tool", sorted(SPECS))
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_arguments_make_a_tool_fail_inside(
    idle_app: tuple[FastAPI, httpx.AsyncClient], tool: str, data: st.DataObject
) -> None:
    app, client = idle_app
    runtime = runtime_of(app)
    if not hasattr(app.state, "fuzz_headers"):
        customer = await make_customer(runtime, tier="pro", credits=10**9)
        app.state.fuzz_headers = {**customer.headers, "Content-Type": "application/json"}
    arguments = data.draw(_arguments(tool))
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    response = await client.post(
        "/api/mcp", content=json.dumps(body).encode(), headers=app.state.fuzz_headers
    )
    assert response.status_code < 500, response.text
    answer = response.json()
    assert "internal error" not in json.dumps(answer), (arguments, answer)
    if "error" in answer:  # a protocol error is fine, as long as it is not an internal one
        assert answer["error"]["code"] != -32603, (arguments, answer)
