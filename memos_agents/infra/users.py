"""MemGovernance users: the records of the principals (people, agents, services) a store knows.

A store keeps one :class:`UserRecord` per principal id. Records are created and disabled by
system-wide admins (operators, ``MemOSConfig.admins``) and never deleted: a disabled id stays
taken, so a newcomer can never inherit the grants an earlier holder of the id left on some cube.

Two modes (``StoreConfig.require_users``):

* ``False`` (the default, an embedded single-user setup): any well-formed principal id may call;
  the records are a directory (names, kinds) and removing a user revokes its ACL entries.
* ``True`` (a shared store): the store checks, in the transaction of every batch, that the
  caller is a registered, enabled user (:class:`~memos_agents.errors.UnknownUserError`
  otherwise); a cube's owner and every principal an ACL entry adds must be one too. Trusted code
  and system-wide admins are exempt: they are configured, not registered.

In both modes a grant to a disabled user is refused. This is authorisation, not authentication:
the principal is who the application says is calling (``CallContext``), and ``require_users`` is a
setting of each client of the store; proving identity is the job of the application or server in
front of it.

After the user and role management of MemGovernance in "MemOS: A Memory OS for AI System"
(MemTensor 2025, section 5.3), whose reference implementation stores users with roles that are
never checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memos_agents.errors import InvalidInputError, UnknownUserError
from memos_agents.schema import Id, as_utc, check_text, utcnow

__all__ = [
    "MAX_NAME_CHARS",
    "RESERVED_USER_IDS",
    "UserKind",
    "UserRecord",
    "check_caller",
    "check_new_user_id",
    "check_principals",
]

#: Longest display name (characters).
MAX_NAME_CHARS = 200
#: Ids no user may take: the actor name of trusted code in the audit log, and the ACL wildcard.
RESERVED_USER_IDS = frozenset({"system", "*"})


class UserKind(StrEnum):
    """What a principal is: a person, an agent, or a service account."""

    USER = "user"
    AGENT = "agent"
    SERVICE = "service"


class UserRecord(BaseModel):
    """One registered principal.

    Attributes:
        user_id: The principal id callers act as (``CallContext.principal``).
        name: Display name (at most :data:`MAX_NAME_CHARS` characters; default empty).
        kind: :class:`UserKind` (default ``user``).
        created_at: When it was registered (UTC; set by the store).
        created_by: Who registered it (set by the store).
        disabled_at: When it was disabled (None: enabled). A disabled user may not call a store
            that requires users, and its id cannot be registered again.

    """

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    name: str = ""
    kind: UserKind = UserKind.USER
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = ""
    disabled_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_text(value, "name", MAX_NAME_CHARS, blank=True)

    @field_validator("created_at", "disabled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    @property
    def enabled(self) -> bool:
        """Whether the user may act (not disabled)."""
        return self.disabled_at is None


def check_new_user_id(user_id: str) -> None:
    """Refuse an id no user may take (:data:`RESERVED_USER_IDS`).

    Raises:
        InvalidInputError: ``system`` or ``*``.

    """
    if user_id in RESERVED_USER_IDS:
        raise InvalidInputError(f"{user_id!r} is reserved and cannot be a user id")


def check_caller(principal: str, record: UserRecord | None) -> None:
    """Check that ``principal``, whose stored record is ``record``, may call a store that requires users.

    Raises:
        UnknownUserError: Not registered, or disabled.

    """
    if record is None:
        raise UnknownUserError(f"user {principal!r} is not registered in this store")
    if not record.enabled:
        raise UnknownUserError(f"user {principal!r} is disabled")


def check_principals(principals: Iterable[str], records: dict[str, UserRecord], *, registered: bool) -> None:
    """Check the principals a cube header adds (``*`` aside): none disabled; with ``registered``, all registered.

    Args:
        principals: The owner and ACL principals the header adds (see ``base.added_principals``).
        records: The stored records of those principals (missing: not registered).
        registered: Whether the store requires users (an unregistered principal is refused too).

    Raises:
        UnknownUserError: The first principal refused (one message for both reasons, so a sharer
            does not learn which ids are registered).

    """
    for principal in principals:
        if principal == "*":
            continue
        record = records.get(principal)
        if (record is None and registered) or (record is not None and not record.enabled):
            raise UnknownUserError(f"cannot grant to {principal!r}: not a registered, enabled user of this store")
