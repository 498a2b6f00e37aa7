"""The loader over HTTP, for agent hosts on machines without the store or the skill trees:
`Loader(url="http://host:8750", token=...)` asks a `skillstage serve` server what the local
loader asks the store and the disk, and keeps the same cache rules.

- The routing table is the server's, sent whole (`GET /v1/routing/table`, `RoutingTable.to_dict`)
  and replaced whole when its generation moves, so `resolve` does no I/O and routes exactly as a
  loader beside the store: the same table, the same `RoutingTable.resolve`. A background thread
  long-polls the feed: a change reaches the loader as soon as the server's own loader sees it.
- When the server cannot be reached (or says it cannot read its store), the last table keeps
  serving and `stats()` says it is stale, as the local loader does when its store fails; the
  feed is asked again every refresh interval, and the first answer makes it fresh again.
- Content comes by digest (`GET /v1/content/{digest}`, `…/files/{relpath}`), read once per
  digest and kept: a digest names one content forever.
- `record` queues the execution record (validated here, with its execution id) and a sender
  posts the queue to `POST /v1/executions` in batches every `flush_ms`; a batch that fails or
  times out is sent again with backoff, which is safe because the server stores an execution id
  once. The queue holds at most `queue_max` records: beyond it a record is dropped and counted
  (`stats()["records_dropped"]`), so a host never blocks nor grows without bound on a server
  that is away. `flush()` waits for the queue to be taken; `close()` flushes first.
- Breakers are the host's, as with a local loader; their events (`breaker_open`,
  `breaker_closed`) are posted to the server (`POST /v1/breaker-events`), which writes them to
  the store's events with the token's name as actor; one the server did not take is logged and
  counted (`stats()["breaker_event_errors"]`), as the local loader counts one its store refused.

The feed and the sender run as two tasks of one asyncio loop on a thread of their own, so that
`close()` can cancel a long poll in flight at once (a blocking socket cannot be woken).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from skillstage.errors import SkillstageError, StoreError, UsageError
from skillstage.runtime.breaker import BreakerEvent
from skillstage.runtime.loader import (
    LoadedSkill,
    Loader,
    _after_fork,
    _record_fields,
    log_breaker_event,
)
from skillstage.runtime.routing import Resolution, RoutingTable

LOG = logging.getLogger("skillstage.runtime")

FEED_WAIT_S = 25.0  # how long one long poll waits on the server (it allows 60)
TIMEOUT_S = 10.0  # a request's timeout, beyond the long poll's wait
FLUSH_MS = 200
BATCH_MAX = 1000
QUEUE_MAX = 100_000
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
CLOSE_FLUSH_S = 5.0
# Statuses after which sending the same batch again may succeed: a timeout, too many requests,
# the server or its store away. Any other refusal is the batch's (or the token's) and final.
_RETRIED = {408, 425, 429, 500, 502, 503, 504}

_ENCODE = msgspec.json.Encoder().encode


class ServerError(StoreError):
    """The skillstage server a remote loader uses cannot be reached, or refused a request."""

    code = "SERVER"


def _refusal(response: httpx.Response) -> str:
    """The server's error message (`{"error": {"message", "hint"}}`), or the status."""
    try:
        error = response.json()["error"]
        text = str(error["message"])
        return f"{text} (hint: {error['hint']})" if error.get("hint") else text
    except Exception:
        return response.text[:200].strip() or "no message"


class RemoteLoader(Loader):
    """A `Loader` whose store and skill trees are a skillstage server's (see the module)."""

    def __init__(
        self,
        project: object = None,
        *,
        url: str | None = None,
        token: str | None = None,
        stage: str | None = None,
        refresh_ms: int | None = None,
        breaker_fail_max: int | None = None,
        breaker_reset_seconds: float | None = None,
        flush_ms: int = FLUSH_MS,
        batch_max: int = BATCH_MAX,
        queue_max: int = QUEUE_MAX,
        timeout_s: float = TIMEOUT_S,
        feed_wait_s: float = FEED_WAIT_S,
    ) -> None:
        if url is None or project is not None:
            raise UsageError(
                "a remote loader takes the server's url and no project",
                hint='Loader(url="http://host:8750", token=...)',
            )
        if min(flush_ms, batch_max, queue_max) < 1 or timeout_s <= 0 or feed_wait_s < 0:
            raise UsageError("flush_ms, batch_max and queue_max must be >= 1, timeout_s > 0")
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout_s = timeout_s
        self._feed_wait_s = feed_wait_s
        self._flush_s = flush_ms / 1000
        self._batch_max = batch_max
        self._queue_max = queue_max
        self._http = self._client()
        first = self._first_table()
        document = first["document"]
        settings = document["runtime"]
        self._start_state(
            stage=stage,
            stages=list(document["stages"]),
            refresh_ms=refresh_ms or int(settings["refresh_ms"]),
            breaker_fail_max=(
                int(settings["breaker_fail_max"]) if breaker_fail_max is None else breaker_fail_max
            ),
            breaker_reset_seconds=(
                float(settings["breaker_reset_seconds"])
                if breaker_reset_seconds is None
                else breaker_reset_seconds
            ),
        )
        self._max_clock_skew = dt.timedelta(seconds=float(settings["max_clock_skew_s"]))
        self._table = RoutingTable.from_dict(document["table"])
        self._counts.update(
            {
                "records_sent": 0,  # taken by the server (stored, or already stored)
                "records_duplicates": 0,  # of those, already stored (a batch sent again)
                "records_refused": 0,  # quarantined by the server, or a batch it refused
                "records_dropped": 0,  # the queue was full
                "record_retries": 0,  # sends that failed and were tried again
            }
        )
        self._server_stale = False  # the last answer said the server cannot read its store
        self._applied = 0  # the number of the feed answer the table is from
        self._asked = 0
        self._note_reachable(first)
        self._last_record_error: str | None = None
        self._start_wire()
        # The local loader's hook: a forked child calls `_after_fork` (below) and starts anew.
        reference: weakref.ReferenceType[Loader] = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(reference))

    # -- HTTP ---------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self._headers, timeout=self._timeout_s)

    def _first_table(self) -> dict[str, Any]:
        """The table to start from; a `ServerError` saying what to fix when there is none."""
        try:
            response = self._http.get("/v1/routing/table")
        except httpx.HTTPError as exc:
            self._http.close()
            raise ServerError(
                f"cannot reach the skillstage server at {self.url}: {type(exc).__name__}: {exc}",
                hint="is `skillstage serve` running there, and is the url right?",
            ) from None
        if response.status_code != 200:
            self._http.close()
            if response.status_code in (401, 403):
                hint = (
                    "give a token whose role may record (recorder, operator or admin): "
                    "`skillstage token create --role recorder --name HOST` makes one"
                )
            else:
                hint = "the server's log says why; a loader can start once it answers"
            raise ServerError(
                f"the skillstage server at {self.url} refused the routing table "
                f"(HTTP {response.status_code}): {_refusal(response)}",
                hint=hint,
            )
        answer: dict[str, Any] = response.json()
        return answer

    # -- the table ------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Ask the server now (no waiting); True if the table was replaced. A failure keeps the
        table there is (and `stats()` says so); it never raises."""
        with self._lock:
            self._asked += 1
            number = self._asked
        try:
            response = self._http.get(
                "/v1/routing/table", params={"since": self._table.generation, "wait": 0}
            )
            answer = self._answer(response)
        except Exception as exc:
            self._note_unreachable(exc)
            return False
        return self._apply(answer, number)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise ServerError(f"HTTP {response.status_code}: {_refusal(response)}")
        answer: dict[str, Any] = response.json()
        return answer

    def _apply(self, answer: dict[str, Any], number: int) -> bool:
        """Take one feed answer: the table, whole, when it is newer than the one serving."""
        table = None
        if answer["changed"]:
            table = RoutingTable.from_dict(answer["document"]["table"])
        rebuilt = False
        with self._lock:
            # Answers asked for later win: a slow answer must not put an older table back.
            if number > self._applied:
                self._applied = number
                if table is not None and table.generation != self._table.generation:
                    self._table = table
                    self._counts["refreshes"] += 1
                    rebuilt = True
        self._note_reachable(answer)
        return rebuilt

    def _note_reachable(self, answer: dict[str, Any]) -> None:
        server_stale = bool(answer.get("stale"))
        with self._lock:
            self._server_stale = server_stale
            if server_stale:
                if self._stale_since is None:
                    self._stale_since = dt.datetime.now(dt.UTC)
                    LOG.warning(
                        "skillstage: the server %s cannot read its store; serving its last table",
                        self.url,
                    )
                self._last_error = (
                    f"the server cannot read its store (since {answer.get('stale_since')})"
                )
                return
            if self._stale_since is not None:
                LOG.warning("skillstage: the server %s answers again", self.url)
            self._stale_since, self._last_error = None, None

    def _note_unreachable(self, exc: BaseException) -> None:
        with self._lock:
            self._counts["refresh_errors"] += 1
            if self._stale_since is None:
                self._stale_since = dt.datetime.now(dt.UTC)
                LOG.warning(
                    "skillstage: the server %s cannot be reached (%s); serving the last table",
                    self.url,
                    exc,
                )
            self._last_error = f"{type(exc).__name__}: {exc}"

    # -- the wire: the feed and the sender, on a loop of their own ----------------------------

    def _start_wire(self) -> None:
        self._queue: collections.deque[bytes] = collections.deque()
        self._in_flight = 0
        self._taken = threading.Condition(threading.Lock())  # the queue emptied or moved
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run_wire,
            args=(started,),
            name="skillstage-remote-loader",
            daemon=True,
        )
        self._thread.start()
        started.wait(5)

    def _run_wire(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._wire(loop, started))
        finally:
            loop.close()

    async def _wire(self, loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        self._loop, self._wake = loop, asyncio.Event()
        timeout = httpx.Timeout(self._timeout_s, read=self._feed_wait_s + self._timeout_s)
        async with (
            httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout) as feed,
            httpx.AsyncClient(
                base_url=self.url, headers=self._headers, timeout=self._timeout_s
            ) as sender,
        ):
            self._events_client = sender
            self._tasks = [
                asyncio.create_task(self._follow(feed)),
                asyncio.create_task(self._send(sender)),
            ]
            started.set()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _follow(self, client: httpx.AsyncClient) -> None:
        """The long poll: ask for the table after the generation serving; on an error, serve
        stale and ask again after a refresh interval."""
        while not self._closed.is_set():
            with self._lock:
                self._asked += 1
                number = self._asked
            try:
                response = await client.get(
                    "/v1/routing/table",
                    params={
                        "since": self._table.generation,
                        "wait": self._feed_wait_s,
                        # The server's store coming back ends the wait too.
                        "stale": self._server_stale,
                    },
                )
                answer = self._answer(response)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_unreachable(exc)
                await asyncio.sleep(self.refresh_s)
                continue
            self._apply(answer, number)

    async def _send(self, client: httpx.AsyncClient) -> None:
        """Post the queue in batches: every `flush_ms`, or at once when a batch is full."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._queue) < self._batch_max:
                await asyncio.sleep(self._flush_s)  # let a batch gather
            while True:
                with self._taken:
                    batch = [
                        self._queue.popleft() for _ in range(min(self._batch_max, len(self._queue)))
                    ]
                    self._in_flight = len(batch)
                if not batch:
                    break
                try:
                    await self._post(client, batch)
                except asyncio.CancelledError:
                    with self._taken:  # kept for a forked child's or a later count
                        self._queue.extendleft(reversed(batch))
                        self._in_flight = 0
                    raise
                with self._taken:
                    self._in_flight = 0
                    self._taken.notify_all()

    async def _post(self, client: httpx.AsyncClient, batch: list[bytes]) -> None:
        body = b"\n".join(batch) + b"\n"
        delay = BACKOFF_FIRST_S
        while True:
            try:
                response = await client.post(
                    "/v1/executions",
                    content=body,
                    headers={"Content-Type": "application/x-ndjson"},
                )
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    result = response.json()
                    with self._lock:
                        taken = int(result["inserted"]) + int(result["duplicates"])
                        self._counts["records_sent"] += taken
                        self._counts["records_duplicates"] += int(result["duplicates"])
                        self._counts["records_refused"] += int(result["quarantined"])
                    if result["quarantined"]:
                        LOG.warning(
                            "skillstage: the server quarantined %s of %s records: %s",
                            result["quarantined"],
                            len(batch),
                            "; ".join(p["reason"] for p in result["problems"][:3]),
                        )
                    return
                problem = f"HTTP {response.status_code}: {_refusal(response)}"
                if response.status_code not in _RETRIED:
                    with self._lock:
                        self._counts["records_refused"] += len(batch)
                    LOG.warning(
                        "skillstage: the server %s refused %s execution records (%s); "
                        "they are dropped",
                        self.url,
                        len(batch),
                        problem,
                    )
                    return
            # Sent again as it is: the server stores each execution id once, so a batch it
            # took before the answer was lost adds nothing the second time.
            with self._lock:
                self._counts["record_retries"] += 1
                self._last_record_error = problem
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    # -- content ----------------------------------------------------------------------------

    def _get(self, path: str, what: str) -> httpx.Response:
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot load {what} from the server {self.url}: {type(exc).__name__}: {exc}",
                hint="the server is out of reach; a copy loaded before still serves",
            ) from None
        if response.status_code != 200:
            raise ServerError(
                f"the server {self.url} has no {what}: {_refusal(response)}",
                code="SERVER_REFUSED",
            )
        return response

    def _read_copy(self, resolution: Resolution) -> LoadedSkill:
        what = f"{resolution.name} {resolution.version} ({resolution.digest[:12]})"
        found = self._get(f"/v1/content/{resolution.digest}", what).json()
        if found["digest"] != resolution.digest:
            raise SkillstageError(f"the server sent {found['digest'][:12]} for {what}")
        return LoadedSkill(
            found["name"],
            found["version"],
            found["digest"],
            found["body"],
            tuple(found["files"]),
            Path(found["path"]),  # on the server's machine
            dict(found["frontmatter"]),
        )

    def _read_file(self, loaded: LoadedSkill, relpath: str) -> bytes:
        what = f"file {relpath!r} of {loaded.name} {loaded.version}"
        return self._get(f"/v1/content/{loaded.digest}/files/{quote(relpath)}", what).content

    # -- recording --------------------------------------------------------------------------

    def _write_record(
        self, resolution: Resolution, breaker: str | None, metrics: dict[str, Any]
    ) -> None:
        from skillstage.metrics.record import _validated, new_execution_id

        fields = _record_fields(resolution, breaker, metrics, self._max_clock_skew)
        skew = fields.pop("max_clock_skew")
        now = dt.datetime.now(dt.UTC)
        stamp = fields.pop("timestamp", None) or now
        fields["timestamp"] = stamp.isoformat() if isinstance(stamp, dt.datetime) else stamp
        fields.setdefault("execution_id", new_execution_id())
        fields.pop("durable", None)
        record = _validated(fields, now + skew)  # refused here, as the local loader refuses
        line = _ENCODE(record.to_dict())
        with self._taken:
            if len(self._queue) >= self._queue_max:
                with self._lock:
                    self._counts["records_dropped"] += 1
                return
            was_empty = not self._queue
            self._queue.append(line)
        if was_empty:
            self._nudge()

    def _nudge(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the loader is
                loop.call_soon_threadsafe(wake.set)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s (None: for ever) until the server took every record queued;
        True if it did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._nudge()
        with self._taken:
            while self._queue or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._taken.wait(0.05 if left is None else min(left, 0.05))
        return True

    def _announce(self, events: list[BreakerEvent]) -> None:
        """Log each breaker event as the local loader does and hand it to the wire, which posts
        it to the server (`POST /v1/breaker-events`); `record` does not wait for it."""
        for event in events:
            log_breaker_event(event)
        body = {
            "host": f"{socket.gethostname()}:{os.getpid()}",
            "events": [{**dataclasses.asdict(e), "at": e.at.isoformat()} for e in events],
        }
        loop, posting = self._loop, self._post_events(body, len(events))
        try:
            if loop is None:
                raise RuntimeError("the loader is not running")
            asyncio.run_coroutine_threadsafe(posting, loop)
        except RuntimeError:  # closed
            posting.close()
            with self._lock:
                self._counts["breaker_event_errors"] += len(events)

    async def _post_events(self, body: dict[str, Any], count: int) -> None:
        # Not idempotent (an event has no id), so tried twice at most: a lost answer may leave
        # the event written twice, a server away leaves it unwritten (and counted).
        problem = ""
        for attempt in range(2):
            try:
                response = await self._events_client.post("/v1/breaker-events", json=body)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                problem = f"HTTP {response.status_code}: {_refusal(response)}"
                if response.status_code not in _RETRIED:
                    break
            if attempt == 0:
                await asyncio.sleep(BACKOFF_FIRST_S)
        with self._lock:
            self._counts["breaker_event_errors"] += count
        LOG.warning(
            "skillstage: %s breaker event(s) could not be written through %s (%s)",
            count,
            self.url,
            problem,
        )

    # -- what happened ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The local loader's `stats()`, with the server and the record queue."""
        found = super().stats()
        with self._taken:
            queued = len(self._queue) + self._in_flight
        found.update(
            {
                "server": self.url,
                "records_queued": queued,
                "last_record_error": self._last_record_error,
            }
        )
        return found

    # -- the end, and forks -------------------------------------------------------------------

    def __enter__(self) -> RemoteLoader:
        return self

    def close(self) -> None:
        """Send what is queued (up to 5 s), then stop the feed and the sender."""
        if self._closed.is_set():
            return
        self.flush(CLOSE_FLUSH_S)
        self._closed.set()
        loop = self._loop
        if loop is not None:
            for task in self._tasks:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    break
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._http.close()

    def _after_fork(self) -> None:
        # The parent's loop, thread and connections are the parent's: the child makes its own.
        # The records queued in the parent are the parent's to send; the child's queue starts
        # empty, or they would be sent twice (harmless, but counted twice here).
        self._breakers = self._breakers.fresh()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._http = self._client()
        self._start_wire()
