"""What a remote loader (`Loader(url=...)`, runtime/remote.py) needs to route and load exactly as
a loader beside the store does: the routing table, whole, with a change feed, and the content of
any copy a route serves, by digest.

- `GET /v1/routing/table?since=<generation>&wait=<s>`: the serialised `RoutingTable`
  (`RoutingTable.to_dict`), with the server's stages and `[runtime]` settings. With `since`, the
  answer waits up to `wait` seconds for the generation to move and says `"changed": false` when
  it did not (a long poll, as `/v1/routing`).
- `GET /v1/content/{digest}`: the SKILL.md body, frontmatter and file list of that copy;
  `GET /v1/content/{digest}/files/{relpath}`: one file's bytes. A digest names one content
  forever, so both carry `ETag: "<digest>"` and `Cache-Control: immutable`.
- `POST /v1/breaker-events`: a remote loader's breaker openings and closings, written to the
  store's events as a local loader writes them (the token's name is the actor; the host and
  process are in the details).

Both read from this process's loader (`app.state.loader`): its table is the one `/v1/resolve`
answers from, refreshed when the store's generation moves, and its digest cache and drift rules
(a live copy that is not the version the store names is served from the archive) are the local
loader's. The table a client gets is that loader's, so several server processes on one store may
answer a generation a moment apart, never a table that was not the store's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from skillstage.errors import UsageError
from skillstage.runtime.breaker import BreakerEvent
from skillstage.runtime.routing import Resolution, RoutingTable, UnknownSkillError
from skillstage.server.auth import require
from skillstage.tokens import RECORD, Principal

if TYPE_CHECKING:
    from skillstage.runtime.loader import Loader

router = APIRouter()
T = TypeVar("T")

Recorder = Annotated[Principal, Depends(require(RECORD))]

LONG_POLL_MAX_SECONDS = 60.0
# How often the waiting requests' watch looks at the loader's generation: an attribute read, no
# I/O; the loader itself sees the store's changes every `runtime.refresh_ms` (at once on
# PostgreSQL).
TABLE_WATCH_SECONDS = 0.02
IMMUTABLE = "public, max-age=31536000, immutable"
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_ENCODE = msgspec.json.Encoder().encode


async def wait_for_change(
    request: Request,
    since: T,
    wait: float,
    current: Callable[[], Awaitable[T]],
    *,
    interval: float,
) -> tuple[bool, T]:
    """The long poll of the routing feeds: `(True, now)` as soon as `current()` is not `since`
    (a generation, or what else the feed follows), else `(False, now)` once `wait` seconds
    passed or the client went away. `current` is looked at every `interval` seconds."""
    deadline = time.monotonic() + wait
    while True:
        now = await current()
        if now != since:
            return True, now
        if time.monotonic() >= deadline or await request.is_disconnected():
            return False, now
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


class BreakerEventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["breaker_open", "breaker_closed"]
    name: str = Field(max_length=64)
    version: str = Field(max_length=128)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    stage: str = Field(max_length=64)
    at: dt.datetime
    reason: str = Field(max_length=1000)
    consecutive_failures: int = Field(ge=0)
    details: dict[str, Any] = {}

    @model_validator(mode="after")
    def _storable(self) -> BreakerEventBody:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("at has no time zone: send it in UTC with a Z")
        if "\x00" in self.version + self.stage + self.reason or "\\u0000" in _ENCODE(
            self.details
        ).decode("utf-8", "replace"):
            raise ValueError("a NUL character (\\u0000) cannot be stored")
        return self

    def event(self) -> BreakerEvent:
        return BreakerEvent(
            self.kind,
            self.name,
            self.version,
            self.digest,
            self.stage,
            self.at,
            self.reason,
            self.consecutive_failures,
            self.details,
        )


class BreakerEventsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=255, description="The agent host (its loader's process).")
    events: list[BreakerEventBody] = Field(max_length=1000)


async def _loader(request: Request) -> Loader:
    # Made on first use, which reads the store: not on the event loop.
    loader: Loader = await run_in_threadpool(request.app.state.loader)
    return loader


def _json(body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else _ENCODE(body)
    return Response(content, media_type="application/json", headers=headers)


def _table_json(request: Request, loader: Loader, table: RoutingTable) -> bytes:
    """The table's JSON, made once per table per process (every host asks for the same)."""
    cached = getattr(request.app.state, "routing_table_json", None)
    if cached is not None and cached[0] is table:
        body: bytes = cached[1]
        return body
    project = loader.project
    runtime = project.config.runtime
    body = _ENCODE(
        {
            "stages": list(project.config.stages),
            "runtime": {
                "refresh_ms": runtime.refresh_ms,
                "breaker_fail_max": runtime.breaker_fail_max,
                "breaker_reset_seconds": runtime.breaker_reset_seconds,
                "max_clock_skew_s": project.config.metrics.max_clock_skew.total_seconds(),
            },
            "table": table.to_dict(),
        }
    )
    request.app.state.routing_table_json = (table, body)
    return body


def _stale(loader: Loader) -> dict[str, Any]:
    since = loader.stale_since
    return {"stale": since is not None, "stale_since": since.isoformat() if since else None}


@router.get(
    "/routing/table",
    summary="The routing table a remote loader serves from; waits for a change after `since`",
    description="The whole table (every route: stable, candidate and fallback versions, weight, "
    "group, segments, kill switch, rollout), with the server's stages and runtime settings. "
    "With `since` (a generation an earlier answer gave), the answer waits up to `wait` seconds "
    "for what serves to change; `changed` is false when it did not. `stale` is true while the "
    "server cannot read its store (the table is the last it read).",
)
async def routing_table(
    request: Request,
    who: Recorder,
    since: Annotated[int | None, Query(ge=0)] = None,
    wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX_SECONDS)] = 30.0,
    stale: Annotated[
        bool, Query(description="Whether the last answer said stale: a change ends the wait.")
    ] = False,
) -> Response:
    loader = await _loader(request)
    if since is not None:
        watch = _watch(request, loader)
        deadline = time.monotonic() + wait

        async def now() -> tuple[int, bool]:
            # At once when it differs from what the host has; else when it moves (or a second
            # passes, for the wait to look at its deadline and the client).
            state = watch.state()
            if state != (since, stale):
                return state
            return await watch.moved(max(0.0, min(1.0, deadline - time.monotonic())))

        moved, (generation, _) = await wait_for_change(
            request, (since, stale), wait, now, interval=0
        )
        if not moved:
            return _json({"changed": False, "generation": generation, **_stale(loader)})
    table = loader.table
    body = _table_json(request, loader, table)
    head = _ENCODE({"changed": True, "generation": table.generation, **_stale(loader)})
    # The cached table's JSON spliced in, not decoded and encoded again per request.
    return _json(head[:-1] + b',"document":' + body + b"}")


class _TableWatch:
    """One per app: looks at its loader's generation and staleness every `TABLE_WATCH_SECONDS`
    while requests wait, and wakes them all when either moves. Each waiting request costs
    nothing until then (polling per request cost 0.3 of a core for 400 waiting hosts)."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self._changed = asyncio.Event()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        self._seen = self.state()

    def state(self) -> tuple[int, bool]:
        return self.loader.table.generation, self.loader.stale

    async def moved(self, timeout: float) -> tuple[int, bool]:
        """The state once it moved, or after `timeout` seconds."""
        changed = self._changed  # taken before any await: a change after this wakes it
        self._waiting += 1
        if self._task is None or self._task.done():
            self._seen = self.state()
            self._task = asyncio.create_task(self._follow())
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1
        return self.state()

    async def _follow(self) -> None:
        while self._waiting:
            await asyncio.sleep(TABLE_WATCH_SECONDS)
            now = self.state()
            if now != self._seen:
                self._seen = now
                self._changed.set()
                self._changed = asyncio.Event()


def _watch(request: Request, loader: Loader) -> _TableWatch:
    watch: _TableWatch | None = getattr(request.app.state, "routing_table_watch", None)
    if watch is None or watch.loader is not loader:
        watch = _TableWatch(loader)
        request.app.state.routing_table_watch = watch
    return watch


def _serving(table: RoutingTable, digest: str) -> Resolution | None:
    """A resolution the table serves `digest` by (stable, candidate or fallback of any route)."""
    for route in table.routes.values():
        for option in (route.stable, route.candidate, route.fallback):
            if option is not None and option.digest == digest:
                return option
    return None


def _resolution(loader: Loader, digest: str) -> Resolution:
    if not _DIGEST.match(digest):
        raise UsageError(
            f"{digest!r} is not a content digest", hint="64 lowercase hex digits, as resolve gives"
        )
    found = _serving(loader.table, digest)
    if found is None and loader.refresh():  # a host may have a table newer than ours
        found = _serving(loader.table, digest)
    if found is None:
        raise UnknownSkillError(
            f"no route serves the content {digest[:12]} now",
            hint="resolve again: a promotion or rollback since the table was read moved it",
        )
    return found


def _content_headers(digest: str) -> dict[str, str]:
    return {"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE}


def _not_modified(request: Request, digest: str) -> Response | None:
    if request.headers.get("if-none-match", "").strip() in (f'"{digest}"', digest, "*"):
        return Response(status_code=304, headers=_content_headers(digest))
    return None


@router.get(
    "/content/{digest}",
    summary="The SKILL.md body, frontmatter and file list of the copy with this digest",
)
async def content(request: Request, who: Recorder, digest: str) -> Response:
    unchanged = _not_modified(request, digest)
    if unchanged is not None:
        return unchanged
    loader = await _loader(request)

    def load() -> dict[str, Any]:
        loaded = loader.load(_resolution(loader, digest))
        return {
            "name": loaded.name,
            "version": loaded.version,
            "digest": loaded.digest,
            "body": loaded.body,
            "files": list(loaded.files),
            "frontmatter": loaded.frontmatter,
            "path": str(loaded.path),
        }

    return _json(await run_in_threadpool(load), _content_headers(digest))


def _inside(base: Path, relpath: str) -> Path:
    """`base / relpath`, refused unless it names a file inside `base` once every link in it is
    followed (`..`, an absolute path, a symlink out of the copy)."""
    clean = PurePosixPath(relpath)
    if (
        not relpath
        or clean.is_absolute()
        or ".." in clean.parts
        or "\\" in relpath
        or "\x00" in relpath
    ):
        raise UsageError(f"{relpath!r} is not a path inside the skill")
    root = base.resolve()
    target = (base / clean).resolve()
    if not target.is_relative_to(root) or target == root:
        raise UsageError(f"{relpath!r} leads out of the skill's copy")
    return target


@router.get(
    "/content/{digest}/files/{relpath:path}",
    summary="One file of the copy with this digest, by its path relative to the skill",
)
async def content_file(request: Request, who: Recorder, digest: str, relpath: str) -> Response:
    unchanged = _not_modified(request, digest)
    if unchanged is not None:
        return unchanged
    loader = await _loader(request)

    def read() -> bytes:
        resolution = _resolution(loader, digest)
        loaded = loader.load(resolution)
        _inside(loaded.path, relpath)  # before anything is read: the loader checks the list
        return loader.read(resolution, relpath)

    data = await run_in_threadpool(read)
    return Response(data, media_type="application/octet-stream", headers=_content_headers(digest))


@router.post(
    "/breaker-events",
    summary="A remote loader's breaker openings and closings, into the store's events",
    description="Each event names a skill the server routes; the token's name is the actor.",
)
async def breaker_events(
    request: Request, who: Recorder, body: BreakerEventsBody
) -> dict[str, int]:
    from skillstage.runtime.loader import append_breaker_event
    from skillstage.store import Store

    loader = await _loader(request)
    routed = {name for (_, name) in loader.table.routes}
    stages = set(loader.project.config.stages)
    elsewhere = sorted({e.stage for e in body.events} - stages)
    if elsewhere:
        raise UsageError(
            f"unknown stage {', '.join(elsewhere)}", hint=f"stages: {', '.join(stages)}"
        )
    unknown = sorted({e.name for e in body.events} - routed)
    if unknown:  # an event must not register a skill nobody serves
        raise UnknownSkillError(
            f"no route serves {', '.join(unknown)}", hint="breaker events name routed skills"
        )
    events = [e.event() for e in body.events]
    for event in events:
        event.details.setdefault("host", body.host)

    def write() -> None:
        with Store.open(loader.project.database_url) as store, store.atomic() as tx:
            for event in events:
                append_breaker_event(tx, event, actor=who.name)

    await run_in_threadpool(write)
    return {"written": len(events)}
