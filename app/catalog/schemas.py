"""Public shapes of the catalog, shared by `GET /api/v1/models` and the MCP `list_models` tool."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field

from app.catalog.catalog import CatalogModel
from app.catalog.pricing import PriceRule
from app.core.schema import PublicModel


class PriceRuleRead(PublicModel):
    base: int | float = Field(description="credits before per and factors")
    per: str | None = Field(description="input whose numeric value multiplies the base")
    factors: dict[str, dict[str, int | float]] = Field(
        description="input -> value -> multiplier; unlisted values multiply by 1. "
        "The product is rounded up to a whole credit, at least 1."
    )

    @classmethod
    def of(cls, rule: PriceRule) -> PriceRuleRead:
        factors = {name: dict(table) for name, table in rule.factors.items()}
        return cls(base=rule.base, per=rule.per, factors=factors)


class ModelRead(PublicModel):
    id: str
    type: Literal["image", "video"]
    scene: str
    description: str
    required_inputs: list[str] = Field(description="as shown to users; 'a or b' means either")
    input_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) of the input")
    pricing: PriceRuleRead

    @classmethod
    def of(cls, model: CatalogModel) -> ModelRead:
        return cls(
            id=model.id,
            type=model.media_type,
            scene=model.scene,
            description=model.description,
            required_inputs=list(model.required_inputs),
            # a copy, so a caller editing the response never edits the catalog
            input_schema=copy.deepcopy(model.input_schema),
            pricing=PriceRuleRead.of(model.pricing),
        )
