"""The accounts' part of the profile page: the account switcher and the current team's card, built
from the account service's answers (the ones the JSON API gives), worded in the reader's language.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..account_context import request_account_id
from ..domain.accounts import (
    AccountKind,
    AccountPermissionError,
    MembershipError,
    Role,
    SeatsExhausted,
    account_kind,
)
from ..errors import BillingError, InvalidRequest
from ..presentation.i18n import translatable
from ..presentation.translator import Translator, metric_title
from ..services.accounts import AccountSummary, Invitation, Team
from ..state import BillingState

ROLE_NAMES = {
    Role.OWNER: translatable("Owner"),
    Role.ADMIN: translatable("Admin"),
    Role.MEMBER: translatable("Member"),
}
INVITABLE_ROLES = (Role.MEMBER, Role.ADMIN)
_FIELD_MESSAGES = (
    # The account service's field messages, listed so that the catalog translates them.
    translatable("Length must be between 1 and 120."),
    translatable("Not a valid email address."),
    translatable("Must be admin or member."),
    translatable("Must be 0 or more."),
)
REFUSALS = (SeatsExhausted, MembershipError, AccountPermissionError, InvalidRequest)
"""The refusals shown next to their form; an unknown account (a stranger's post) is a 404."""


# -- what the page shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    user_id: str
    label: str
    """The host's email of the member, else their name, else their id."""
    role: Role
    role_name: str
    you: bool
    used: list[tuple[int, int | None]]
    """Per metric of ``TeamView.metrics``: (used this period, the member's cap or None)."""


@dataclass(frozen=True)
class TeamView:
    """The team card of the current team account."""

    team: Team
    role_name: str
    manages: bool
    owner: bool
    members: list[MemberRow]
    usage_rows: list[MemberRow]
    """The usage table's rows: every member for owners and admins, one's own for a member."""
    metrics: list[tuple[str, str]]
    """The periodic metrics (name, title): the usage table's columns and the caps' choices."""
    invitations: list[Invitation]
    seats_text: str
    last_owner: bool
    """The user is the team's only owner: they cannot leave (the card says why)."""


@dataclass(frozen=True)
class AccountsView:
    """The switcher: the user's accounts and the current one."""

    accounts: list[tuple[AccountSummary, str]]
    """(account, label): "Personal" or the team's name."""
    current: str
    team: TeamView | None


def accounts_view(state: BillingState, t: Translator, user_id: str) -> AccountsView:
    current = request_account_id(state, user_id)
    accounts = [(a, _label(t, a)) for a in state.accounts.accounts_of(user_id)]
    team = None
    if account_kind(current) is AccountKind.TEAM:
        team = _team_view(state, t, user_id, current)
    return AccountsView(accounts, current, team)


def _label(t: Translator, account: AccountSummary) -> str:
    if account.kind is AccountKind.PERSONAL:
        return t.gettext("Personal")
    return account.name or account.id


def _team_view(state: BillingState, t: Translator, user_id: str, account_id: str) -> TeamView:
    accounts = state.accounts
    team = accounts.team(user_id, account_id)
    usage = accounts.team_usage(user_id, account_id)
    catalog = state.runtime.catalog
    metrics = [
        (name, metric_title(t, catalog.metric(name))) for name in catalog.periodic_metric_names
    ]
    rows = [
        MemberRow(
            m.user_id,
            _member_label(state, m.user_id),
            m.role,
            t.gettext(ROLE_NAMES[m.role]),
            m.user_id == user_id,
            [
                (usage.get(m.user_id, {}).get(name, 0), team.caps.get((m.user_id, name)))
                for name, _ in metrics
            ],
        )
        for m in team.members
    ]
    role = team.account.role
    seats = team.seats
    if seats.seats is None:
        seats_text = t.ngettext("%(num)s seat taken", "%(num)s seats taken", seats.taken)
    else:
        seats_text = t.gettext(
            "%(taken)s of %(seats)s seats taken", taken=seats.taken, seats=seats.seats
        )
    owners = sum(1 for m in team.members if m.role is Role.OWNER)
    return TeamView(
        team=team,
        role_name=t.gettext(ROLE_NAMES[role]),
        manages=role.manages,
        owner=role is Role.OWNER,
        members=rows,
        usage_rows=rows if role.manages else [r for r in rows if r.you],
        metrics=metrics,
        invitations=team.invitations,
        seats_text=seats_text,
        last_owner=role is Role.OWNER and owners <= 1,
    )


def _member_label(state: BillingState, user_id: str) -> str:
    host = state.profiles.host_user(user_id)
    return host.email or host.first_name or user_id


def refusal_text(t: Translator, error: BillingError) -> str:
    """A refusal in the reader's language, with its numbers."""
    details = error.details()
    if isinstance(error, SeatsExhausted):
        return t.gettext(
            "All %(seats)s seats are taken: %(members)s members and %(pending)s pending "
            "invitations. Revoke an invitation, remove a member or choose a plan with more seats.",
            seats=details.get("seats"),
            members=details.get("members"),
            pending=details.get("pending_invitations"),
        )
    if isinstance(error, MembershipError):
        if details.get("reason") == "last_owner":
            return t.gettext(
                "A team keeps at least one owner: transfer the ownership to another member first."
            )
        if str(error) == "already a member" or "member of this team already" in str(error):
            return t.gettext("This user is a member of the team already.")
        return t.gettext("There is no such member in this team.")
    if isinstance(error, AccountPermissionError):
        return t.gettext("Your role in this team does not allow this.")
    if isinstance(error, InvalidRequest):
        return " ".join(t.gettext(text) for texts in error.fields.values() for text in texts)
    return t.gettext("The change was refused.")
