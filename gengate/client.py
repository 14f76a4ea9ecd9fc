"""`from gengate.client import Client, AsyncClient`: the Python client (see app.client)."""

from app.client import *  # noqa: F403
from app.client import __all__ as __all__
