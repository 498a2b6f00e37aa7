"""Who is asking: the FastAPI dependency every route declares with the permission it needs.

`Depends(require(OPERATE))` answers 401 without a valid token and 403 when the token's role does
not grant the permission, and otherwise gives the route the `Principal` (its name is the actor).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request

from skillstage.server.errors import error_body
from skillstage.tokens import Principal, roles_granting


def require(permission: str) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        state = request.app.state
        if not state.auth_required:
            return Principal(state.local_actor, "admin")
        # Token checking is not built yet: every request is refused until it is.
        raise HTTPException(
            401,
            error_body(
                "UNAUTHORIZED",
                "this request needs a token",
                f"roles that may: {', '.join(roles_granting(permission))}",
            ),
        )

    return dependency
