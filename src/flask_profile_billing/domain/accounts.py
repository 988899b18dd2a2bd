"""Accounts pay, users act: who may spend from, read and manage which account.

An account is named by a string key. A user's personal account is ``user:<user id>``: derived from
the user, so it needs no lookup on the hot path and there is exactly one per user by construction.
A team account is ``team:<random>``. The two prefixes keep the names apart, whatever ids the host
gives its users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .catalog import translatable
from .errors import BillingError

PERSONAL_PREFIX = "user:"
TEAM_PREFIX = "team:"
MAX_ACCOUNT_ID_LENGTH = 300
MEMBER_CAP_MESSAGE = translatable("Your limit in this team is reached: {amount} per period")
"""A refusal by a member's own cap; ``{amount}`` is the cap counted in the metric's unit."""
"""The account columns' width: the personal prefix and a host user id of up to 255 characters."""


class AccountKind(StrEnum):
    PERSONAL = "personal"
    TEAM = "team"


class Role(StrEnum):
    """A member's role in a team account; a personal account's user is its owner."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def manages(self) -> bool:
        """Owners and admins invite, remove members, change roles (but not to or from owner) and
        set caps, and see every member's usage; members see the pool and their own."""
        return self is not Role.MEMBER


def personal_account_id(user_id: str) -> str:
    return PERSONAL_PREFIX + user_id


def personal_user_id(account_id: str) -> str | None:
    """The user whose personal account ``account_id`` is; None for a team account."""
    if account_id.startswith(PERSONAL_PREFIX):
        return account_id[len(PERSONAL_PREFIX) :]
    return None


def account_kind(account_id: str) -> AccountKind:
    if account_id.startswith(PERSONAL_PREFIX):
        return AccountKind.PERSONAL
    if account_id.startswith(TEAM_PREFIX):
        return AccountKind.TEAM
    raise UnknownAccountError(f"no account {account_id!r}")


class UnknownAccountError(BillingError, LookupError):
    """No such account, or not one the user belongs to: the two answer alike, so that nobody can
    learn which accounts exist."""

    error_code = "ACCOUNT_NOT_FOUND"


class AccountPermissionError(BillingError):
    """A member's role does not allow the change (a member setting caps, an admin making an owner)."""

    error_code = "ACCOUNT_FORBIDDEN"


class SeatsExhausted(BillingError):
    """Every seat of the plan is taken (members and pending invitations count)."""

    error_code = "SEATS_EXHAUSTED"


class TooManyMembersForPlan(BillingError):
    """A plan change that would leave more members than the new plan's seats."""

    error_code = "TOO_MANY_MEMBERS"


class MembershipError(BillingError):
    """A membership change that cannot be made: the last owner leaving, a member twice..."""

    error_code = "MEMBERSHIP_CONFLICT"


class InvitationError(BillingError):
    """An invitation that cannot be accepted: unknown, used, revoked, expired or for another
    address. One code for all, so a token cannot be probed."""

    error_code = "INVITATION_INVALID"


@dataclass(frozen=True, slots=True)
class SeatCount:
    """Seats of a team account: taken by members and pending invitations, out of the plan's."""

    members: int
    pending_invitations: int
    seats: int | None
    """None: the plan does not limit members."""

    @property
    def taken(self) -> int:
        return self.members + self.pending_invitations

    @property
    def free(self) -> int | None:
        return None if self.seats is None else max(0, self.seats - self.taken)

    def require_one_free(self) -> None:
        if self.seats is not None and self.taken >= self.seats:
            raise SeatsExhausted(
                f"all {self.seats} seats are taken: {self.members} members and "
                f"{self.pending_invitations} pending invitations",
                {
                    "seats": self.seats,
                    "members": self.members,
                    "pending_invitations": self.pending_invitations,
                },
            )


def require_manager(role: Role | None) -> None:
    if role is None:
        raise UnknownAccountError("no such account")
    if not role.manages:
        raise AccountPermissionError("only the account's owners and admins may do this")


def require_owner(role: Role | None) -> None:
    if role is None:
        raise UnknownAccountError("no such account")
    if role is not Role.OWNER:
        raise AccountPermissionError("only an owner of the account may do this")


def may_change_role(actor: Role, current: Role, new: Role) -> bool:
    """Owners change any role; admins move members and admins between admin and member, but
    never make or unmake an owner (that is a transfer of ownership)."""
    if actor is Role.OWNER:
        return True
    if actor is Role.ADMIN:
        return Role.OWNER not in (current, new)
    return False
