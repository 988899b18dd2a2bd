"""Rows to typed records and back: the domain's records whose fields are their table's columns
(``domain.payments.Payment``, ``Arrangement``), so a column added to both needs no mapping."""

from __future__ import annotations

from dataclasses import fields
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Row

Record = TypeVar("Record")


def from_row(record_type: type[Record], row: Row[Any], status: type[StrEnum]) -> Record:
    """The ``record_type`` of ``row`` (which may hold more columns, as a join does), its
    ``status`` as the ``status`` enum."""
    values = row._mapping
    kept = {field.name: values[field.name] for field in fields(record_type)}  # type: ignore[arg-type]
    kept["status"] = status(kept["status"])
    return record_type(**kept)


def to_columns(record: Any) -> dict[str, Any]:
    """The column values of ``record`` (every field, enums as their stored text)."""
    columns = {field.name: getattr(record, field.name) for field in fields(record)}
    columns["status"] = columns["status"].value
    return columns
