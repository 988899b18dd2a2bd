"""Accounts and their members: which accounts a user may act for, teams, roles, invitations, seats
and member caps.

Every change to a team's members runs in one transaction under the account row's lock, so the seat
count, the last owner and an invitation's single use are decided on what is current. Membership is
asked of the database on every call: a user never reads, spends from or changes an account they do
not belong to, and a stranger's account answers as an unknown one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Connection

from .. import signals
from ..domain.accounts import (
    TEAM_PREFIX,
    AccountKind,
    AccountPermissionError,
    InvitationError,
    MembershipError,
    Role,
    SeatCount,
    TooManyMembersForPlan,
    UnknownAccountError,
    account_kind,
    may_change_role,
    personal_account_id,
    personal_user_id,
    require_manager,
    require_owner,
)
from ..domain.catalog import MetricKind, Plan
from ..domain.notifications import Notification, NotificationKind
from ..errors import InvalidRequest
from ..presentation.translator import translator_of
from ..store import accounts as stored
from ..store.transactions import read_connection, write_transaction
from .email_senders import EmailSenders, OutgoingEmail
from .mail import default_from
from .notifications import NotificationService
from .runtime import Runtime
from .subscriptions import SubscriptionService

_log = logging.getLogger(__name__)

MAX_TEAM_NAME_LENGTH = 120
_TEAM_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EMAIL_LENGTH = 320


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """An account as a user who may act for it sees it in a list."""

    id: str
    kind: AccountKind
    name: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    role: Role
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class Invitation:
    id: str
    account_id: str
    email: str
    role: Role
    invited_by: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    """A new invitation and its token: the token is never stored, only its hash, so this is the
    one moment it can be sent."""

    invitation: Invitation
    token: str


@dataclass(frozen=True, slots=True)
class Team:
    """A team account as one of its members sees it."""

    account: AccountSummary
    members: list[Member]
    seats: SeatCount
    invitations: list[Invitation]
    """Pending ones; empty for a plain member, who does not manage them."""
    caps: dict[tuple[str, str], int]
    """(user, metric) to cap; a plain member sees their own only."""


@dataclass(frozen=True, slots=True)
class TeamListing:
    """A team account in the staff's list of every team."""

    id: str
    name: str | None
    members: int
    created_at: datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountService:
    def __init__(
        self,
        runtime: Runtime,
        subscriptions: SubscriptionService,
        senders: EmailSenders,
        notifications: NotificationService,
    ) -> None:
        self._runtime = runtime
        self._subscriptions = subscriptions
        self._senders = senders
        self._notifications = notifications

    def _plan_of(self, account_id: str) -> Plan:
        """The plan in force of the account: its seats are the plan's."""
        subscription = self._subscriptions.current(account_id)
        return self._runtime.catalog.plan(subscription.plan_code)

    # -- who acts for which account ----------------------------------------------------------

    def resolve(self, user_id: str, account_id: str | None = None) -> str:
        """The account ``user_id`` acts for: ``account_id`` when they belong to it, else their
        personal account. ``UnknownAccountError`` for any account they do not belong to."""
        if account_id is None:
            return personal_account_id(user_id)
        self.role(user_id, account_id)
        return account_id

    def role(self, user_id: str, account_id: str) -> Role:
        """``user_id``'s role in ``account_id``; ``UnknownAccountError`` when not a member."""
        try:
            kind = account_kind(account_id)
        except UnknownAccountError:
            raise UnknownAccountError("no such account") from None
        if kind is AccountKind.PERSONAL:
            if personal_user_id(account_id) != user_id:
                raise UnknownAccountError("no such account")
            return Role.OWNER
        with read_connection(self._runtime.engine) as connection:
            role = stored.role_of(connection, account_id, user_id)
        if role is None:
            raise UnknownAccountError("no such account")
        return Role(role)

    def accounts_of(self, user_id: str) -> list[AccountSummary]:
        """The user's personal account first, then their teams in the order they joined."""
        with read_connection(self._runtime.engine) as connection:
            teams = stored.teams_of(connection, user_id)
        personal = AccountSummary(
            personal_account_id(user_id), AccountKind.PERSONAL, None, Role.OWNER
        )
        return [personal] + [
            AccountSummary(record.id, AccountKind.TEAM, record.name, Role(role))
            for record, role in teams
        ]

    # -- teams -------------------------------------------------------------------------------

    def create_team(self, user_id: str, name: str, key: str | None = None) -> AccountSummary:
        """A new team account owned by ``user_id``. Its id is ``team:<key>``: a random key, or
        the host's own (its organisation's slug, say: letters, digits, ``-`` and ``_``, up to
        64), refused with 409 when taken."""
        name = _team_name(name)
        if key is None:
            key = secrets.token_hex(8)
        elif not _TEAM_KEY.fullmatch(key):
            raise InvalidRequest(
                "a team key has 1 to 64 letters, digits, '-' or '_'",
                {"key": ["Must be 1 to 64 letters, digits, '-' or '_'."]},
            )
        account_id = TEAM_PREFIX + key
        with write_transaction(self._runtime.engine) as connection:
            if stored.find_account(connection, account_id) is not None:
                raise MembershipError("that team key is taken", {"key": [key]})
            stored.insert_team(connection, account_id, name, user_id, self._runtime.now())
        return AccountSummary(account_id, AccountKind.TEAM, name, Role.OWNER)

    def first_owner(self, account_id: str) -> str:
        """The team's longest-standing owner: whom staff act as from the command line, so that
        the service's checks (seats, the last owner) apply to them as to any owner."""
        if not account_id.startswith(TEAM_PREFIX):
            raise UnknownAccountError(f"no team account {account_id!r}")
        with read_connection(self._runtime.engine) as connection:
            members = stored.members_of(connection, account_id)
        for member in members:
            if member.role == Role.OWNER:
                return member.user_id
        raise UnknownAccountError(f"no team account {account_id!r}")

    def all_teams(self) -> list[TeamListing]:
        """Every team account with its number of members, oldest first (for staff)."""
        with read_connection(self._runtime.engine) as connection:
            return [
                TeamListing(team.id, team.name, team.members, team.created_at)
                for team in stored.all_teams(connection)
            ]

    def team_usage(self, user_id: str, account_id: str) -> dict[str, dict[str, int]]:
        """What each member used of each periodic metric in the account's current period:
        every member's for owners and admins, one's own for a member."""
        role = self.role(user_id, account_id)
        runtime = self._runtime
        subscription = self._subscriptions.current(account_id)
        period = runtime.period(subscription, runtime.now())
        metrics = runtime.catalog.periodic_metric_names
        with read_connection(runtime.engine) as connection:
            used = stored.member_usage(
                connection,
                account_id,
                metrics,
                period.start,
                user_id=None if role.manages else user_id,
            )
        usage: dict[str, dict[str, int]] = {}
        for (member, metric), amount in used.items():
            usage.setdefault(member, dict.fromkeys(metrics, 0))[metric] = amount
        return usage

    def rename_team(self, user_id: str, account_id: str, name: str) -> None:
        name = _team_name(name)
        with write_transaction(self._runtime.engine) as connection:
            require_manager(self._team_role(connection, account_id, user_id))
            stored.rename_account(connection, account_id, name)

    def team(self, user_id: str, account_id: str) -> Team:
        """The team as ``user_id`` may see it: managers see the invitations and every cap."""
        now = self._runtime.now()
        self._require_team_member(user_id, account_id)  # before the plan is read (or written)
        seats = self._plan_of(account_id).seats
        with read_connection(self._runtime.engine) as connection:
            role = self._team_role(connection, account_id, user_id)
            record = stored.find_account(connection, account_id)
            members = stored.members_of(connection, account_id)
            pending = stored.pending_invitations(connection, account_id, now)
            caps = stored.caps_of(connection, account_id)
        assert record is not None  # a member row refers to its account
        if not role.manages:
            caps = {key: cap for key, cap in caps.items() if key[0] == user_id}
        return Team(
            AccountSummary(account_id, AccountKind.TEAM, record.name, role),
            [Member(m.user_id, Role(m.role), m.joined_at) for m in members],
            SeatCount(len(members), len(pending), seats),
            [_invitation(i) for i in pending] if role.manages else [],
            caps,
        )

    # -- members -----------------------------------------------------------------------------

    def change_role(self, actor: str, account_id: str, user_id: str, role: Role) -> None:
        with write_transaction(self._runtime.engine) as connection:
            actor_role = self._locked_role(connection, account_id, actor)
            require_manager(actor_role)
            current = stored.role_of(connection, account_id, user_id)
            if current is None:
                raise MembershipError("no such member", {"user_id": user_id})
            assert actor_role is not None
            if not may_change_role(actor_role, Role(current), role):
                raise AccountPermissionError("only an owner may make or unmake an owner")
            if current == Role.OWNER and role is not Role.OWNER:
                self._keep_an_owner(connection, account_id)
            stored.set_role(connection, account_id, user_id, role.value)

    def remove_member(self, actor: str, account_id: str, user_id: str) -> None:
        """Remove a member; their seat is free when this returns (the same transaction)."""
        with write_transaction(self._runtime.engine) as connection:
            actor_role = self._locked_role(connection, account_id, actor)
            if actor == user_id:
                if actor_role is None:
                    raise UnknownAccountError("no such account")
            else:
                require_manager(actor_role)
            current = stored.role_of(connection, account_id, user_id)
            if current is None:
                raise MembershipError("no such member", {"user_id": user_id})
            if current == Role.OWNER:
                if actor_role is not Role.OWNER:
                    raise AccountPermissionError("only an owner may remove an owner")
                self._keep_an_owner(connection, account_id)
            stored.remove_member(connection, account_id, user_id)

    def leave(self, user_id: str, account_id: str) -> None:
        """Leave a team; the last owner cannot (transfer the ownership first)."""
        self.remove_member(user_id, account_id, user_id)

    def transfer_ownership(self, actor: str, account_id: str, new_owner: str) -> None:
        """Make ``new_owner`` (a member) an owner, and the acting owner an admin."""
        with write_transaction(self._runtime.engine) as connection:
            require_owner(self._locked_role(connection, account_id, actor))
            if new_owner == actor:
                raise MembershipError("you are an owner already", {"user_id": new_owner})
            if stored.role_of(connection, account_id, new_owner) is None:
                raise MembershipError("no such member", {"user_id": new_owner})
            stored.set_role(connection, account_id, new_owner, Role.OWNER.value)
            stored.set_role(connection, account_id, actor, Role.ADMIN.value)

    def add_member(self, actor: str, account_id: str, user_id: str, role: Role) -> None:
        """Add a user directly (the CLI's way, for staff): the seats are checked as for an
        invitation."""
        now = self._runtime.now()
        self._require_team_member(actor, account_id)
        seats = self._plan_of(account_id).seats
        with write_transaction(self._runtime.engine) as connection:
            actor_role = self._locked_role(connection, account_id, actor)
            require_manager(actor_role)
            if role is Role.OWNER and actor_role is not Role.OWNER:
                raise AccountPermissionError("only an owner may add an owner")
            self._seat_count(connection, account_id, seats, now).require_one_free()
            if not stored.add_member(connection, account_id, user_id, role.value, now):
                raise MembershipError("already a member", {"user_id": user_id})
            full = self._claim_seats_full(connection, account_id, seats, now)
        self._announce_seats_full(full)

    def members_beyond(self, account_id: str, plan: Plan) -> list[str]:
        """Every member of the account when they are more than ``plan``'s seats (for the
        refusal to list, so an owner can choose whom to remove); empty when they fit."""
        if account_kind(account_id) is AccountKind.PERSONAL or plan.seats is None:
            return []
        with read_connection(self._runtime.engine) as connection:
            members = stored.members_of(connection, account_id)
        return [m.user_id for m in members] if len(members) > plan.seats else []

    def require_seats_for(self, account_id: str, plan: Plan) -> None:
        """``TooManyMembersForPlan``, listing the members, when ``plan`` has fewer seats than the
        account has members."""
        members = self.members_beyond(account_id, plan)
        if members:
            assert plan.seats is not None
            raise TooManyMembersForPlan(
                f"the plan {plan.code!r} has {plan.seats} seats and the account has "
                f"{len(members)} members: remove {len(members) - plan.seats} first",
                {"seats": plan.seats, "members": members},
            )

    # -- caps --------------------------------------------------------------------------------

    def set_cap(
        self, actor: str, account_id: str, user_id: str, metric: str, cap: int | None
    ) -> None:
        """Cap what ``user_id`` may use of ``metric`` per period; None removes the cap."""
        metric_def = self._runtime.metric(metric, MetricKind.PERIODIC)
        if cap is not None and cap < 0:
            raise InvalidRequest("a cap is 0 or more", {"cap": ["Must be 0 or more."]})
        with write_transaction(self._runtime.engine) as connection:
            require_manager(self._locked_role(connection, account_id, actor))
            if stored.role_of(connection, account_id, user_id) is None:
                raise MembershipError("no such member", {"user_id": user_id})
            if cap is None:
                stored.remove_cap(connection, account_id, user_id, metric_def.name)
            else:
                now = self._runtime.now()
                stored.set_cap(connection, account_id, user_id, metric_def.name, cap, now)

    # -- invitations -------------------------------------------------------------------------

    def invite(
        self, actor: str, account_id: str, email: str, role: Role = Role.MEMBER
    ) -> IssuedInvitation:
        """A one-use invitation for ``email``, taking a seat until it is accepted, revoked or
        expires. A new invitation to the same address replaces the pending one."""
        email = _email(email)
        if role is Role.OWNER:
            raise InvalidRequest(
                "invite as admin or member; make an owner by transferring the ownership",
                {"role": ["Must be admin or member."]},
            )
        now = self._runtime.now()
        self._require_team_member(actor, account_id)
        seats = self._plan_of(account_id).seats
        token = secrets.token_urlsafe(32)
        invitation = Invitation(
            id=secrets.token_hex(12),
            account_id=account_id,
            email=email,
            role=role,
            invited_by=actor,
            created_at=now,
            expires_at=now + timedelta(hours=self._runtime.settings.invitation_ttl_hours),
        )
        with write_transaction(self._runtime.engine) as connection:
            require_manager(self._locked_role(connection, account_id, actor))
            stored.revoke_pending_for_email(connection, account_id, email, now)
            self._seat_count(connection, account_id, seats, now).require_one_free()
            stored.insert_invitation(connection, _record(invitation), hash_token(token))
            full = self._claim_seats_full(connection, account_id, seats, now)
        self._announce_seats_full(full)
        return IssuedInvitation(invitation, token)

    def send_invitation(
        self, issued: IssuedInvitation, accept_url: str, inviter: str | None
    ) -> bool:
        """Email the invitation through the configured sender; False when there is none or it
        failed (the invitation stands: its link can be passed on another way, and only the
        invited address can accept it)."""
        sender = self._senders.sender
        if sender is None:
            return False
        settings = self._runtime.settings
        translator = translator_of((settings.page.locale or "en").replace("-", "_"))
        with read_connection(self._runtime.engine) as connection:
            account = stored.find_account(connection, issued.invitation.account_id)
        team = account.name if account is not None and account.name else ""
        subject = translator.gettext("You are invited to join %(team)s", team=team)
        text = translator.gettext(
            "%(inviter)s invites you to the team %(team)s.\n\n"
            "Accept the invitation: %(url)s\n\n"
            "It is valid until %(expires)s (UTC) and only for this email address.",
            inviter=inviter or translator.gettext("A team owner"),
            team=team,
            url=accept_url,
            expires=issued.invitation.expires_at.strftime("%Y-%m-%d %H:%M"),
        )
        email = OutgoingEmail(
            to=issued.invitation.email,
            subject=subject,
            text=text,
            html=None,
            from_address=settings.email.from_address or default_from(self._runtime.app.config),
            locale=translator.locale,
        )
        try:
            sender(email)
        except Exception:
            _log.warning(
                "the invitation email to %s failed", issued.invitation.email, exc_info=True
            )
            return False
        return True

    def revoke_invitation(self, actor: str, account_id: str, invitation_id: str) -> None:
        now = self._runtime.now()
        with write_transaction(self._runtime.engine) as connection:
            require_manager(self._locked_role(connection, account_id, actor))
            if not stored.revoke_invitation(connection, account_id, invitation_id, now):
                raise InvitationError("no such pending invitation")

    def invitation_for(self, token: str) -> tuple[Invitation, str | None]:
        """The pending invitation of ``token`` and its team's name, for the page that offers to
        accept it; ``InvitationError`` when it cannot be accepted."""
        now = self._runtime.now()
        with read_connection(self._runtime.engine) as connection:
            record = stored.find_invitation_by_token(connection, hash_token(token))
            if record is None or not _is_pending(record, now):
                raise InvitationError("this invitation is not valid any more")
            account = stored.find_account(connection, record.account_id)
        return _invitation(record), None if account is None else account.name

    def accept(self, user_id: str, email: str | None, token: str) -> AccountSummary:
        """Join the team of the invitation ``token``, which must be pending and for ``email``
        (the logged-in user's address, compared without case). One use: of concurrent
        acceptances one succeeds."""
        now = self._runtime.now()
        token_hash = hash_token(token)
        with read_connection(self._runtime.engine) as connection:
            found = stored.find_invitation_by_token(connection, token_hash)
        if found is None or not _is_pending(found, now):
            raise InvitationError("this invitation is not valid any more")
        # Read before the transaction: the account's subscription may have to be written first.
        seats = self._plan_of(found.account_id).seats
        with write_transaction(self._runtime.engine) as connection:
            record = stored.find_invitation_by_token(connection, token_hash)
            if record is None or not _is_pending(record, now):
                raise InvitationError("this invitation is not valid any more")
            if email is None or email.strip().lower() != record.email.lower():
                raise InvitationError("this invitation is for another email address")
            account = stored.lock_account(connection, record.account_id)
            if account is None or not stored.claim_invitation(connection, record.id, user_id, now):
                raise InvitationError("this invitation is not valid any more")
            if stored.role_of(connection, record.account_id, user_id) is not None:
                raise MembershipError("you are a member of this team already")
            members = stored.count_members(connection, record.account_id)
            if seats is not None and members >= seats:
                # The invitation held a seat, but a plan change since may have taken it away.
                SeatCount(members, 0, seats).require_one_free()
            stored.add_member(connection, record.account_id, user_id, record.role, now)
        return AccountSummary(record.account_id, AccountKind.TEAM, account.name, Role(record.role))

    # -- internals ---------------------------------------------------------------------------

    def _team_role(self, connection: Connection, account_id: str, user_id: str) -> Role:
        if not account_id.startswith(TEAM_PREFIX):
            raise UnknownAccountError("no such account")
        role = stored.role_of(connection, account_id, user_id)
        if role is None:
            raise UnknownAccountError("no such account")
        return Role(role)

    def _require_team_member(self, user_id: str, account_id: str) -> None:
        with read_connection(self._runtime.engine) as connection:
            self._team_role(connection, account_id, user_id)

    def _locked_role(self, connection: Connection, account_id: str, user_id: str) -> Role | None:
        """``user_id``'s role, with the account locked for the change that follows."""
        if not account_id.startswith(TEAM_PREFIX):
            raise UnknownAccountError("no such account")
        if stored.lock_account(connection, account_id) is None:
            raise UnknownAccountError("no such account")
        role = stored.role_of(connection, account_id, user_id)
        if role is None:
            raise UnknownAccountError("no such account")
        return Role(role)

    def _keep_an_owner(self, connection: Connection, account_id: str) -> None:
        if stored.count_owners(connection, account_id) <= 1:
            raise MembershipError(
                "a team keeps at least one owner: transfer the ownership first",
                {"reason": "last_owner"},
            )

    def _claim_seats_full(
        self, connection: Connection, account_id: str, seats: int | None, now: datetime
    ) -> tuple[Notification, SeatCount] | None:
        """In the transaction that took a seat: when it was the last one, claim ``seats_full``
        for the team's owners, once per seat count and UTC day (a team that frees a seat and
        fills it again the same day is told once; a plan with another seat count is news)."""
        count = self._seat_count(connection, account_id, seats, now)
        if count.seats is None or count.free != 0:
            return None
        day = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
        notice = self._notifications.claim_in(
            connection, account_id, NotificationKind.SEATS_FULL, str(count.seats), day, now
        )
        return None if notice is None else (notice, count)

    def _announce_seats_full(self, full: tuple[Notification, SeatCount] | None) -> None:
        """After the commit: ``seats_full`` and the notification's ``notification_due``."""
        if full is None:
            return
        notice, count = full
        signals.seats_full.send(
            self._runtime.app,
            user_id=None,
            account_id=notice.account_id,
            seats=count.seats,
            members=count.members,
            invited=count.pending_invitations,
        )
        self._notifications.announce([notice])

    def _seat_count(
        self, connection: Connection, account_id: str, seats: int | None, now: datetime
    ) -> SeatCount:
        return SeatCount(
            stored.count_members(connection, account_id),
            stored.count_pending_invitations(connection, account_id, now),
            seats,
        )


def _team_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_TEAM_NAME_LENGTH:
        raise InvalidRequest(
            f"a team name has 1 to {MAX_TEAM_NAME_LENGTH} characters",
            {"name": [f"Length must be between 1 and {MAX_TEAM_NAME_LENGTH}."]},
        )
    return name


def _email(email: str) -> str:
    email = (email or "").strip()
    local, _, domain = email.rpartition("@")
    if not local or "." not in domain or len(email) > MAX_EMAIL_LENGTH or " " in email:
        raise InvalidRequest("not a valid email address", {"email": ["Not a valid email address."]})
    return email


def _is_pending(record: stored.InvitationRecord, now: datetime) -> bool:
    return record.accepted_at is None and record.revoked_at is None and record.expires_at > now


def _invitation(record: stored.InvitationRecord) -> Invitation:
    return Invitation(
        record.id,
        record.account_id,
        record.email,
        Role(record.role),
        record.invited_by,
        record.created_at,
        record.expires_at,
    )


def _record(invitation: Invitation) -> stored.InvitationRecord:
    return stored.InvitationRecord(
        id=invitation.id,
        account_id=invitation.account_id,
        email=invitation.email,
        role=invitation.role.value,
        invited_by=invitation.invited_by,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
        accepted_at=None,
        accepted_by=None,
        revoked_at=None,
    )
