"""The ASGI app: one per server process, stateless beyond caches (the store holds the state)."""

from __future__ import annotations

from fastapi import FastAPI

from skillstage import __version__
from skillstage.config import Project
from skillstage.server import errors


def create_app(project: Project, *, auth: bool = True, actor: str | None = None) -> FastAPI:
    """The server's app over `project`. `auth=False` (`--insecure-no-auth`) lets every request
    act as `actor` with every permission: for a loopback host only."""
    from skillstage.api import default_actor

    app = FastAPI(
        title="skillstage",
        version=__version__,
        summary="Release engineering for AI-agent skills.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
    )
    app.state.project = project
    app.state.auth_required = auth
    app.state.local_actor = default_actor(actor)
    errors.install(app)
    return app
