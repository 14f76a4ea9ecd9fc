"""Price rules: how many credits one task costs, computed from its normalised input.

credits = base x (value of the input named by `per`) x factors[input][value] for each listed
input, rounded up to a whole credit and at least 1. Arithmetic is decimal so a factor such as
1.1 never turns 11 credits into 12 through float error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypeGuard

__all__ = ["PriceRule", "factor_key", "parse_price_rule", "price_of"]

_RULE_KEYS = frozenset({"base", "per", "factors"})
_NUMERIC_TYPES = frozenset({"integer", "number"})


@dataclass(frozen=True)
class PriceRule:
    base: int | float
    per: str | None = None
    # input name -> value key (see factor_key) -> multiplier
    factors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def factor_key(value: Any) -> str:
    """The key a factor table uses for an input value: `true`/`false` for booleans, else str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def price_of(rule: PriceRule, normalized: Mapping[str, Any]) -> int:
    """Credits for one task with this (already normalised) input.

    Raises ValueError when the `per` input holds something that is not a number.
    """
    amount = _decimal(rule.base)
    if rule.per is not None and rule.per in normalized:
        amount *= _decimal(normalized[rule.per])
    for name, table in rule.factors.items():
        if name in normalized:
            factor = table.get(factor_key(normalized[name]))
            if factor is not None:
                amount *= _decimal(factor)
    return max(1, int(amount.to_integral_value(rounding=ROUND_CEILING)))


def parse_price_rule(table: Any, inputs: Mapping[str, Mapping[str, Any]]) -> PriceRule:
    """Build a PriceRule from its catalog table, checked against the model's input schemas.

    Raises ValueError describing the first problem found.
    """
    if not isinstance(table, Mapping):
        raise ValueError("price must be a table with base, per and factors")
    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        raise ValueError(f"price has unknown key {unknown[0]!r}")
    base = table.get("base")
    if not _is_number(base) or base <= 0:
        raise ValueError("price base must be a positive number")
    per = table.get("per")
    if per is not None:
        _check_per(per, inputs)
    factors = _parse_factors(table.get("factors", {}), inputs)
    return PriceRule(base=base, per=per, factors=factors)


def _check_per(per: Any, inputs: Mapping[str, Mapping[str, Any]]) -> None:
    if not isinstance(per, str) or per not in inputs:
        raise ValueError(f"price per {per!r} is not an input of this model")
    schema = inputs[per]
    if schema.get("type") in _NUMERIC_TYPES:
        return
    enum = schema.get("enum")
    if not isinstance(enum, list) or not all(_is_numeric_text(v) for v in enum):
        raise ValueError(f"price per {per!r} needs a numeric input (a number or numeric enum)")


def _parse_factors(
    factors: Any, inputs: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Mapping[str, float]]:
    if not isinstance(factors, Mapping):
        raise ValueError("price factors must be a table of input name -> {value = factor}")
    parsed: dict[str, Mapping[str, float]] = {}
    for name, table in factors.items():
        if name not in inputs:
            raise ValueError(f"price factor for {name!r}, which is not an input of this model")
        if not isinstance(table, Mapping):
            raise ValueError(f"price factors for {name!r} must be a table of value = factor")
        allowed = _value_keys(inputs[name])
        if allowed is None:
            raise ValueError(f"price factors for {name!r} need an input with an enum or boolean")
        for key, factor in table.items():
            if key not in allowed:
                raise ValueError(
                    f"price factor for {name} = {key!r}, which is not one of its values "
                    f"({', '.join(sorted(allowed))})"
                )
            if not _is_number(factor) or factor <= 0:
                raise ValueError(f"price factor for {name} = {key!r} must be a positive number")
        parsed[name] = MappingProxyType(dict(table))
    return MappingProxyType(parsed)


def _value_keys(schema: Mapping[str, Any]) -> set[str] | None:
    enum = schema.get("enum")
    if isinstance(enum, list):
        return {factor_key(v) for v in enum}
    if schema.get("type") == "boolean":
        return {"true", "false"}
    return None


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_numeric_text(value: Any) -> bool:
    try:
        _decimal(value)
    except ValueError:
        return False
    return True


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return Decimal(value)
    try:
        # repr of a float is its shortest round-tripping form: 0.1 -> Decimal("0.1")
        result = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation as error:
        raise ValueError(f"{value!r} is not a number") from error
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a number")
    return result
