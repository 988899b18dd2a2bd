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
AccountLoader = Callable[[str], "str | None"]
"""The host's choice of the account a request of a user acts for; None: the personal one."""


@dataclass
class Runtime:
    app: Flask
    settings: BillingSettings
    catalog: Catalog
    db: SQLAlchemy
    cache: BillingCache
    capacity_loaders: dict[str, CapacityLoader] = field(default_factory=dict)
    account_loader_slot: list[AccountLoader | None] = field(default_factory=lambda: [None])
    """The host's ``@billing.account_loader``, in a slot the extension object shares, so that a
    loader registered after ``init_app`` is seen."""

    @property
    def account_loader(self) -> AccountLoader | None:
        return self.account_loader_slot[0]

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
