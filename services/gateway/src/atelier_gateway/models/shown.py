"""What a public model shows of the contract it is built from."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def shown_fields(model: type[BaseModel], source: BaseModel) -> dict[str, Any]:
    """The fields of `source` that `model` declares, and no others: a public model lists every
    field it shows on purpose, so a field added to a contract (storage keys, provider detail)
    stays inside Atelier."""
    return source.model_dump(include=set(model.model_fields) & set(type(source).model_fields))
