"""Notifications through Apprise (slack://, mailto://, json:// webhooks, …), from the outbox.

`notification_items` makes one outbox payload per configured URL inside the promotion's
transaction; `send` delivers one after the commit. `send` never raises, and no message it returns
carries a URL's secrets: Apprise URLs hold tokens and passwords in every part (slack://TokenA/…,
mailto://user:password@…), so only the scheme and a host name are ever shown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from skillstage.config import SEVERITIES, NotificationEvent, NotificationsConfig, Severity

REDACTED: Final = "***"

# How much of Apprise's log to keep as the error of a failed send.
_ERROR_LINES = 5


@dataclass(frozen=True)
class NotifyResult:
    """How one notification went. `error` is redacted: it never holds the URL's secrets."""

    ok: bool
    error: str | None
    retryable: bool = True  # False: retrying cannot help (an invalid URL)


def notification_items(
    config: NotificationsConfig,
    event: NotificationEvent,
    *,
    title: str,
    body: str,
    skill: str,
    severity: Severity = "info",
) -> list[dict[str, Any]]:
    """One outbox payload per configured URL that hears `event` at `severity` (enqueue each with
    kind `notify`); none when the event is not in `notifications.events` or no URL hears it."""
    if event not in config.events:
        return []
    items = []
    for entry in config.urls:
        if isinstance(entry, str):
            url, least, events = entry, "info", None
        else:
            url, least, events = entry.url, entry.min_severity, entry.events
        if SEVERITIES.index(severity) < SEVERITIES.index(least):
            continue
        if events is not None and event not in events:
            continue
        items.append(
            {
                "event": event,
                "severity": severity,
                "url": url,
                "target": redact_url(url),
                "title": title,
                "body": body,
                "skill": skill,
            }
        )
    return items


# How a severity shows in the chat service (Apprise's notify types: colour, icon).
_NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure"}


def _shows_host(host: str) -> bool:
    # A host name or address (hooks.example.com, 127.0.0.1, localhost) is not a secret; in many
    # Apprise schemes the "host" is a token (slack://T0KEN/…, discord://WEBHOOK_ID/…).
    return "." in host or ":" in host or host == "localhost"


def redact_url(url: str) -> str:
    """The URL with its credentials, tokens, path and query replaced by ***: what may be shown."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://{REDACTED}" if scheme and scheme.isalnum() else REDACTED
    if not parts.scheme or not parts.netloc:
        return REDACTED
    host = parts.hostname or ""
    shown = host if _shows_host(host) else REDACTED
    if ":" in shown:
        shown = f"[{shown}]"
    text = f"{parts.scheme}://"
    if parts.username is not None or parts.password is not None:
        text += f"{REDACTED}@"
    text += shown
    if port is not None and shown != REDACTED:
        text += f":{port}"
    if parts.path.strip("/") or parts.query or parts.fragment:
        text += f"/{REDACTED}"
    return text


def _secrets(url: str) -> list[str]:
    """Every fragment of `url` that may be a secret, longest first, to scrub from messages."""
    try:
        parts = urlsplit(url)
        fragments = [
            parts.username or "",
            parts.password or "",
            parts.path,
            parts.query,
            parts.fragment,
            *parts.path.split("/"),
            *re.split(r"[&=]", parts.query),
        ]
        if parts.hostname and not _shows_host(parts.hostname):
            fragments.append(parts.hostname)
    except ValueError:
        fragments = re.split(r"[/:@?&=#]", url.split("://", 1)[-1])
    found = set()
    for fragment in fragments:
        # Very short fragments ("/", "1") are not secrets, and scrubbing them mangles the text.
        if len(fragment.strip("/")) >= 3:
            found.add(fragment)
            found.add(unquote(fragment))
    return sorted(found, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """`text` with the URL replaced by its redacted form and every secret-looking fragment of
    it (password, token, path segment, query value) by ***."""
    text = text.replace(url, redact_url(url))
    for secret in _secrets(url):
        # Whole tokens only: a path segment "notify" must not turn "notification" into "***ication".
        pattern = rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
        text = re.sub(pattern, REDACTED, text)
    return text


def _failure_lines(log: str) -> str:
    # Apprise logs why a send failed at WARNING and the exception behind it at DEBUG
    # ("Socket Exception: …"); the rest of its debug output (payloads) is noise here.
    kept = []
    for line in log.splitlines():
        level, _, message = line.partition(" ")
        if level in ("WARNING", "ERROR", "CRITICAL"):
            kept.append(message.strip().rstrip("."))
        elif message.startswith("Socket Exception"):
            # requests' text is long and repeats the URL; the OS's reason is what tells.
            errno = re.search(r"\[Errno -?\d+\] [^\"')]+", message)
            kept.append(errno.group(0) if errno else message.strip())
    return "; ".join(kept[-_ERROR_LINES:])


def send(payload: Mapping[str, Any]) -> NotifyResult:
    """Send one notification payload (from `notification_items`) through Apprise. Never raises;
    a failure's message names the target without its secrets."""
    import apprise  # imported here: loading its plugins is not free, and most commands never send

    url = str(payload.get("url") or "")
    target = redact_url(url)
    if not url:
        return NotifyResult(False, "the notification has no URL", retryable=False)
    title = str(payload.get("title") or "")
    # Apprise refuses an empty body; the title alone is still worth sending.
    body = str(payload.get("body") or title or "skillstage")
    notifier = apprise.Apprise()
    try:
        capture = apprise.LogCapture(  # type: ignore[no-untyped-call]
            level=logging.DEBUG, fmt="%(levelname)s %(message)s"
        )
        with capture as log:
            added = notifier.add(url)
            if not added:
                return NotifyResult(
                    False,
                    f"not a valid Apprise URL: {target} (check notifications.urls in "
                    "skillstage.toml; see https://appriseit.com/services/ for URL formats)",
                    retryable=False,
                )
            kind = _NOTIFY_TYPES.get(str(payload.get("severity") or "info"), "info")
            sent = notifier.notify(title=title, body=body, notify_type=kind)
            captured = log.getvalue()
    except Exception as exc:  # a plugin bug must not escape into the promotion's report
        return NotifyResult(False, f"{target}: {scrub(f'{type(exc).__name__}: {exc}', url)}")
    if sent:
        return NotifyResult(True, None)
    reason = _failure_lines(captured) or "Apprise reported a failure"
    return NotifyResult(False, f"{target}: {scrub(reason, url)}")
