"""The ASGI app: one per server process, stateless beyond caches (the store holds the state), so
several processes, or several servers on one PostgreSQL store, act as one."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request, Response

from skillstage import __version__
from skillstage.config import Project
from skillstage.server import errors

if TYPE_CHECKING:
    from skillstage.runtime.loader import Loader

# What `skillstage serve` passes its worker processes, which build their app themselves.
NO_AUTH_ENV = "SKILLSTAGE_SERVER_NO_AUTH"
ROOT_ENV = "SKILLSTAGE_SERVER_ROOT"


class _Loaders:
    """The process's loader (what `/v1/resolve` asks), made on first use and closed with the app:
    its routing table is kept in memory and refreshed when the store's generation moves, by the
    same rules as an agent host's loader."""

    def __init__(self, project: Project) -> None:
        self._project = project
        self._loader: Loader | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Loader:
        if self._loader is None:
            with self._lock:
                if self._loader is None:
                    from skillstage.runtime.loader import Loader

                    self._loader = Loader(self._project)
        return self._loader

    def close(self) -> None:
        if self._loader is not None:
            self._loader.close()
            self._loader = None


def create_app(project: Project, *, auth: bool = True, actor: str | None = None) -> FastAPI:
    """The server's app over `project`. `auth=False` (`--insecure-no-auth`) lets every request
    act as `actor` with every permission: for a loopback host only."""
    from skillstage.api import default_actor
    from skillstage.dashboard import routes as dashboard
    from skillstage.server import auth as sessions
    from skillstage.server import runtime_routes, v1
    from skillstage.server.auth import require
    from skillstage.tokens import READ

    loaders = _Loaders(project)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        loaders.close()

    app = FastAPI(
        title="skillstage",
        version=__version__,
        summary="Release engineering for AI-agent skills.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.project = project
    app.state.auth_required = auth
    app.state.local_actor = default_actor(actor)
    app.state.loader = loaders
    errors.install(app)
    app.include_router(v1.router, prefix="/v1")
    app.include_router(runtime_routes.router, prefix="/v1")
    app.include_router(sessions.router)  # the dashboard's sign-in and sign-out
    app.include_router(dashboard.router)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require(READ))])
    def metrics(request: Request) -> Response:
        from skillstage.server.prometheus import exposition

        body, content_type = exposition(project, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def from_environment() -> FastAPI:
    """The app of a worker process `skillstage serve` started: the project it serves is found
    as the command found it ($SKILLSTAGE_CONFIG, else the nearest config at or above
    $SKILLSTAGE_SERVER_ROOT)."""
    from skillstage.config import load_project

    root = os.environ.get(ROOT_ENV)
    project = load_project(None, start=Path(root) if root else None)
    return create_app(project, auth=not os.environ.get(NO_AUTH_ENV))
