"""gengate's public import paths: `gengate.client` is the Python client (app.client)."""
