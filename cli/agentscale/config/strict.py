"""The base of every schema: unknown fields refused, values frozen, and no infinite or NaN
number accepted anywhere (YAML spells them .inf and .nan)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )
