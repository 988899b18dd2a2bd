"""Mirroring the configured catalog into ``billing_plans``, so that subscriptions can refer to it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..domain.catalog import Plan
from ..store import plans as stored
from ..store.transactions import write_transaction
from .runtime import Runtime


@dataclass(frozen=True, slots=True)
class SeedResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]


class CatalogSync:
    """Writes the configured catalog to ``billing_plans`` (``flask billing seed-plans``), and on first
    use inserts the plans the table lacks, so subscriptions always have a plan row to refer to."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._seeded = False
        self._lock = threading.Lock()

    def seed(self) -> SeedResult:
        """Insert missing plans and update changed ones: running it twice changes nothing more."""
        runtime = self._runtime
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        with write_transaction(runtime.engine) as connection:
            rows = stored.stored_plans(connection)
            for plan in runtime.catalog.plans.values():
                values = self._row_values(plan)
                row = rows.get(plan.code)
                if row is None:
                    stored.insert_plan(connection, {**values, "updated_at": runtime.now()})
                    created.append(plan.code)
                elif any(getattr(row, key) != value for key, value in values.items()):
                    stored.update_plan(
                        connection, plan.code, {**values, "updated_at": runtime.now()}
                    )
                    updated.append(plan.code)
                else:
                    unchanged.append(plan.code)
        self._seeded = True
        return SeedResult(created, updated, unchanged)

    def forget_seeded(self) -> None:
        """The plan rows are gone (the tables were dropped): seed them again on next use."""
        with self._lock:
            self._seeded = False

    def ensure_seeded(self) -> None:
        """Insert the plans the database lacks, once per process, before the first subscription."""
        if self._seeded or not self._runtime.settings.auto_seed_plans:
            return
        with self._lock:
            if self._seeded:
                return
            with write_transaction(self._runtime.engine) as connection:
                for plan in self._runtime.catalog.plans.values():
                    values = self._row_values(plan) | {"updated_at": self._runtime.now()}
                    stored.insert_plan_if_missing(connection, values)
            self._seeded = True

    @staticmethod
    def _row_values(plan: Plan) -> dict[str, Any]:
        return {
            "code": plan.code,
            "name": plan.name,
            "description": plan.description,
            "price_monthly": plan.price_monthly,
            "price_yearly": plan.price_yearly,
            "currency": plan.currency,
            "limits": dict(plan.limits),
            "features": dict(plan.features),
            "sort_order": plan.sort_order,
            "is_default": plan.is_default,
        }
