"""Small loopback servers standing in for upstreams unreachable from the tests."""
