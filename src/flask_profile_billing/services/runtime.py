"""What every service of one app shares: settings, catalog, database, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from ..domain.catalog import Catalog, Metric, MetricKind
from ..domain.periods import Period, period_containing
from ..domain.subscriptions import Subscription
from ..errors import BillingConfigError
from ..settings import BillingSettings
from .cache import BillingCache

if TYPE_CHECKING:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

CapacityLoader = Callable[[str], int]


@dataclass
class Runtime:
    app: Flask
    settings: BillingSettings
    catalog: Catalog
    db: SQLAlchemy
    cache: BillingCache
    capacity_loaders: dict[str, CapacityLoader] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def now(self) -> datetime:
        return self.settings.clock()

    def period(self, subscription: Subscription, moment: datetime) -> Period:
        return period_containing(
            self.settings.period_rule,
            moment,
            subscription.period_anchor,
            self.settings.period_timezone,
        )

    def metric(self, name: str, kind: MetricKind) -> Metric:
        metric = self.catalog.metric(name)
        if metric.kind is not kind:
            raise BillingConfigError(f"metric {name!r} is a {metric.kind} metric, not {kind}")
        return metric
