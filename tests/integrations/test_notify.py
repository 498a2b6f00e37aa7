"""Notifications through Apprise to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from skillstage.config import Config, HooksConfig, NotificationsConfig, Project
from skillstage.integrations import outbox as delivery
from skillstage.integrations.notify import notification_items, redact_url, scrub, send
from skillstage.store import Store
from skillstage.store import outbox as box


@dataclass
class Receiver:
    """A webhook endpoint: records each request and answers with the next queued status."""

    port: int
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order; then 200

    def url(self, path: str = "/hook", credentials: str = "") -> str:
        return f"json://{credentials}127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append((self.path, json.loads(self.rfile.read(length))))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    # Bound then released: nothing listens there for the rest of the test.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def make_project(root: Path, urls: list[str], **hooks: Any) -> Project:
    config = Config(notifications=NotificationsConfig(urls=urls), hooks=HooksConfig(**hooks))
    return Project(root=root, config=config, source=None)


def payloads(config: NotificationsConfig, event: str = "promoted") -> list[dict[str, Any]]:
    return notification_items(
        config,
        event,  # type: ignore[arg-type]
        title="Promoted auth-v2 2.0.0",
        body="auth-v2 2.0.0 is in production",
        skill="auth-v2",
    )


def test_one_item_per_url_and_none_for_an_event_not_subscribed() -> None:
    urls = ["json://127.0.0.1:8080/hook", "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOX/#ops"]
    config = NotificationsConfig(urls=urls, events=["promoted", "rolled_back"])

    items = payloads(config)

    assert [item["url"] for item in items] == urls
    assert [item["target"] for item in items] == ["json://127.0.0.1:8080/***", "slack://***/***"]
    assert items[0] == {
        "event": "promoted",
        "severity": "info",
        "url": urls[0],
        "target": "json://127.0.0.1:8080/***",
        "title": "Promoted auth-v2 2.0.0",
        "body": "auth-v2 2.0.0 is in production",
        "skill": "auth-v2",
    }
    assert payloads(config, "sla_breach") == []
    assert payloads(NotificationsConfig()) == []


def test_a_target_hears_only_its_severity_and_events() -> None:
    from skillstage.config import NotificationTarget

    pager = NotificationTarget(url="json://127.0.0.1:9/pager", min_severity="critical")
    alerts_only = NotificationTarget(url="json://127.0.0.1:9/alerts", events=["alert"])
    config = NotificationsConfig(urls=["json://127.0.0.1:9/all", pager, alerts_only])

    def heard(event: str, severity: str) -> list[str]:
        return [
            item["url"].rsplit("/", 1)[1]
            for item in notification_items(
                config,
                event,
                title="t",
                body="b",
                skill="s",
                severity=severity,  # type: ignore[arg-type]
            )
        ]

    assert heard("rolled_back", "critical") == ["all", "pager"]
    assert heard("rolled_back", "warning") == ["all"]
    assert heard("alert", "warning") == ["all", "alerts"]
    assert heard("alert", "critical") == ["all", "pager", "alerts"]
    assert heard("promoted", "info") == ["all"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mailto://alerts:pa55w0rd@gmail.com", "mailto://***@gmail.com"),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", "discord://***/***"),
        ("tgram://123456789:AAHn9-bottoken/12315544/", "tgram://***"),
        ("jsons://hooks.example.com/services/t0ken?secret=x1y2z3", "jsons://hooks.example.com/***"),
        ("not a url", "***"),
    ],
)
def test_redact_url_keeps_only_the_scheme_and_a_host_name(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_every_secret_fragment_but_not_ordinary_words() -> None:
    url = "json://bob:hunter22@127.0.0.1:9/notify/tok3nvalue?key=k3yval"
    text = f"failed for {url}; token tok3nvalue, password hunter22, key k3yval; notification"

    scrubbed = scrub(text, url)

    for secret in ("hunter22", "tok3nvalue", "k3yval"):
        assert secret not in scrubbed
    assert "json://***@127.0.0.1:9/***" in scrubbed
    assert scrubbed.endswith("notification")


def test_send_posts_the_title_and_body_to_the_webhook(receiver: Receiver) -> None:
    [payload] = payloads(NotificationsConfig(urls=[receiver.url("/skills/events")]))

    result = send(payload)

    assert result.ok and result.error is None
    [(path, received)] = receiver.requests
    assert path == "/skills/events"
    assert received["title"] == "Promoted auth-v2 2.0.0"
    assert received["message"] == "auth-v2 2.0.0 is in production"


def test_a_receiver_error_is_retried_then_delivered(
    receiver: Receiver, tmp_path: Path, sqlite_url: str
) -> None:
    receiver.statuses = [500, 503]
    project = make_project(tmp_path, [receiver.url()], retries=3, retry_base_seconds=0.5)
    waits: list[float] = []
    with Store.open(sqlite_url) as store:
        with store.atomic() as tx:
            [item_id] = [
                box.enqueue(tx, "notify", p) for p in payloads(project.config.notifications)
            ]

        [result] = delivery.deliver(project, store, sleep=waits.append)

        assert waits == [0.5, 1.0]
        assert len(receiver.requests) == 3
        assert (result.ok, result.attempts, result.name) == (
            True,
            3,
            f"json://127.0.0.1:{receiver.port}/***",
        )
        recorded = box.get_item(store, item_id)
        assert recorded is not None and (recorded.status, recorded.attempts) == ("delivered", 3)


def test_a_receiver_that_keeps_failing_is_recorded_as_failed(
    receiver: Receiver, tmp_path: Path, sqlite_url: str
) -> None:
    receiver.statuses = [500] * 10
    project = make_project(tmp_path, [receiver.url()], retries=2, retry_base_seconds=0)
    with Store.open(sqlite_url) as store:
        with store.atomic() as tx:
            [item_id] = [
                box.enqueue(tx, "notify", p) for p in payloads(project.config.notifications)
            ]

        [result] = delivery.deliver(project, store, sleep=lambda _: None)

        assert len(receiver.requests) == 3
        assert not result.ok and result.attempts == 3
        assert result.error is not None and "500" in result.error
        recorded = box.get_item(store, item_id)
        assert recorded is not None
        assert (recorded.status, recorded.attempts) == ("pending", 3)
        assert recorded.last_error == result.error


def test_an_unreachable_receiver_is_a_failure_without_secrets(tmp_path: Path) -> None:
    url = f"json://bob:hunter22@127.0.0.1:{free_port()}/hooks/tok3nvalue"

    result = send({"url": url, "title": "t", "body": "b"})

    assert not result.ok and result.retryable
    assert result.error is not None
    assert result.error.startswith("json://***@127.0.0.1:")
    assert "Connection" in result.error
    for secret in ("bob", "hunter22", "tok3nvalue"):
        assert secret not in result.error


def test_an_invalid_url_fails_at_once_with_a_clear_error(tmp_path: Path, sqlite_url: str) -> None:
    url = "slack://onlyonetoken-s3cret"
    project = make_project(tmp_path, [url])
    waits: list[float] = []
    with Store.open(sqlite_url) as store:
        with store.atomic() as tx:
            [item_id] = [
                box.enqueue(tx, "notify", p) for p in payloads(project.config.notifications)
            ]

        [result] = delivery.deliver(project, store, sleep=waits.append)

        assert waits == []  # retrying cannot make the URL valid
        assert (result.ok, result.attempts, result.status) == (False, 1, "failed")
        assert result.error is not None
        assert result.error.startswith("not a valid Apprise URL: slack://***")
        assert "s3cret" not in result.error
        recorded = box.get_item(store, item_id)
        assert recorded is not None and recorded.status == "failed"
