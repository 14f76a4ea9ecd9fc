"""The model catalog: an operator-editable TOML file of models, their inputs and prices."""

from app.catalog.catalog import (
    MEDIA_TYPES,
    PACKAGED_CATALOG_PATH,
    Catalog,
    CatalogError,
    CatalogModel,
    MediaType,
    load_catalog,
)
from app.catalog.pricing import PriceRule, price_of

__all__ = [
    "MEDIA_TYPES",
    "PACKAGED_CATALOG_PATH",
    "Catalog",
    "CatalogError",
    "CatalogModel",
    "MediaType",
    "PriceRule",
    "load_catalog",
    "price_of",
]
