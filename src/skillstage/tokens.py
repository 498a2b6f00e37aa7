"""API tokens and the roles they carry: who may do what through `skillstage serve`.

A role grants permissions; a server route asks for one permission (`read`, `record`, `operate`,
`approve`, `admin`) and a token whose role grants it gets through. The token's name is the actor
every write records, so the four-eyes rule of sign-offs holds across people holding tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

READ = "read"  # every GET of the API and the dashboard
RECORD = "record"  # post executions, resolve which version serves
OPERATE = "operate"  # promote, roll back, rollouts, holds, kill switch
APPROVE = "approve"  # record a sign-off
ADMIN = "admin"  # manage tokens

PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "recorder": frozenset({RECORD}),
    "operator": frozenset({READ, RECORD, OPERATE}),
    "approver": frozenset({READ, APPROVE}),
    "admin": frozenset({READ, RECORD, OPERATE, APPROVE, ADMIN}),
}
ROLES = tuple(PERMISSIONS)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a token's name and role."""

    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def roles_granting(permission: str) -> list[str]:
    """The roles that grant `permission`, for a 403's message."""
    return [role for role, granted in PERMISSIONS.items() if permission in granted]
