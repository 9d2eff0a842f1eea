"""Notifiers: webhook (Alertmanager-like JSON), Slack-compatible incoming webhook, email (SMTP).

All sit behind :class:`Notifier`: ``notify(message) -> None`` raising :class:`NotifyError` on
failure (``retryable`` says whether a retry may help). Each call checks its destination with the
SSRF guard first, has a time limit for the whole exchange (``deadline.py``), and never follows
redirects.
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Protocol

import httpcore
import httpx

from . import deadline
from .errors import DestinationRefused, NotifyError, RuleError
from .notetext import email_body, one_line, slack_text
from .ssrf import check_host, check_url, pinned

TIMEOUT_S = 5.0


class Notifier(Protocol):
    """Sends one notification (a group of alerts, Alertmanager's webhook payload) somewhere."""

    name: str

    def notify(self, message: dict[str, Any]) -> None: ...


def _destination(check: Callable[..., list[str]], *args: Any) -> tuple[list[str], float]:
    """The addresses the SSRF guard ``check(*args, timeout)`` allows, and the seconds left of
    TIMEOUT_S after it resolved the name (the resolution counts against the time limit)."""
    start = time.monotonic()
    try:
        addrs = check(*args, TIMEOUT_S)
    except DestinationRefused as e:
        raise NotifyError(str(e), retryable=e.transient) from None
    return addrs, max(0.5, TIMEOUT_S - (time.monotonic() - start))


def _post(url: str, body: dict[str, Any], allow_private: bool, headers: dict[str, str] | None = None) -> None:
    addrs, left = _destination(check_url, url, allow_private)
    content = json.dumps(body).encode()
    answer = None
    for i, addr in enumerate(addrs):  # only the checked addresses; the name is not resolved again
        target, host, ext = pinned(url, addr)
        try:
            answer = deadline.post_status(target, content, {"content-type": "application/json", **(headers or {}),
                                                            **host}, ext, _ssl_context(), left)
            break
        except httpcore.ConnectError as e:
            if i == len(addrs) - 1:
                raise NotifyError(f"POST {_redact(url)}: ConnectError: {e}") from None
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol) as e:
            raise NotifyError(f"POST {_redact(url)}: {type(e).__name__}: {e}") from None
    if answer is None:
        raise NotifyError(f"POST {_redact(url)}: no address to connect to")
    status, answer_headers = answer
    if 300 <= status < 400:
        raise NotifyError(f"POST {_redact(url)}: redirect {status} refused (redirects are not followed)",
                          retryable=False)
    if status >= 400:
        raise NotifyError(f"POST {_redact(url)}: HTTP {status}",
                          retryable=status >= 500 or status in (408, 429),
                          retry_after=_retry_after(answer_headers.get("retry-after")))


_ssl: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """httpx's default trust (certifi's roots), made once."""
    global _ssl
    if _ssl is None:
        _ssl = httpx.create_ssl_context()
    return _ssl


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the delta form; an HTTP date is ignored)."""
    try:
        return max(0.0, min(float(value), 3600.0)) if value else None
    except ValueError:
        return None


def _redact(url: str) -> str:
    """Scheme, host and port only: webhook URLs carry their secret in the path (Slack's
    ``/services/T…/B…/<token>``) as often as in the query or the user part."""
    u = httpx.URL(url)
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}" + (f":{u.port}" if u.port is not None else "") + ("/..." if u.path != "/" else "/")


class WebhookNotifier:
    integration = "webhook"

    def __init__(self, name: str, url: str, allow_private: bool = False, headers: dict[str, str] | None = None,
                 max_alerts: int = 0):
        self.name, self.url, self.allow_private, self.headers = name, url, allow_private, headers or {}
        self.max_alerts = max_alerts  # alerts in one payload at most, 0 = all (Alertmanager's max_alerts)

    def notify(self, message: dict[str, Any]) -> None:
        alerts = message["alerts"]
        if self.max_alerts and len(alerts) > self.max_alerts:  # the rest counted, as Alertmanager does
            message = {**message, "alerts": alerts[:self.max_alerts],
                       "truncatedAlerts": message.get("truncatedAlerts", 0) + len(alerts) - self.max_alerts}
        _post(self.url, message, self.allow_private, self.headers)


class SlackNotifier:
    integration = "slack"

    def __init__(self, name: str, url: str, allow_private: bool = False, channel: str = ""):
        self.name, self.url, self.allow_private, self.channel = name, url, allow_private, channel

    def notify(self, message: dict[str, Any]) -> None:
        body: dict[str, Any] = {"text": slack_text(message)}
        if self.channel:
            body["channel"] = self.channel
        _post(self.url, body, self.allow_private)


class EmailNotifier:
    integration = "email"

    def __init__(self, name: str, to: list[str], sender: str, smarthost: str, allow_private: bool = False,
                 starttls: bool = False, username: str = "", password: str = ""):
        host, _, port = smarthost.rpartition(":")
        if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise RuleError(f"receiver {name}: smarthost must be host:port")
        self.name, self.to, self.sender, self.host, self.port = name, to, sender, host, int(port)
        self.allow_private, self.starttls, self.username, self.password = allow_private, starttls, username, password

    def notify(self, message: dict[str, Any]) -> None:
        addrs, left = _destination(check_host, self.host, self.port, self.allow_private)
        msg = EmailMessage()
        labels = ", ".join(f"{k}={v}" for k, v in message["groupLabels"].items())
        # label values come from the data: a line break (any of those str.splitlines breaks at) would
        # be refused by the email library, or be a header of its own; each is shown as a space
        msg["Subject"] = one_line(f"[{message['status'].upper()}:{len(message['alerts'])}] {labels}")[:200]
        msg["From"], msg["To"] = self.sender, ", ".join(self.to)
        msg.set_content(email_body(message))
        # connect to the checked address, never to a second resolution of the name; STARTTLS checks
        # the certificate against the name (smtplib takes it from ``_host``)
        cut = None
        try:
            with smtplib.SMTP(timeout=left) as s, deadline.smtp_cutoff(s, left) as cut:
                s._host = self.host  # type: ignore[attr-defined]
                s.connect(addrs[0], self.port)
                if self.starttls:
                    s.starttls()
                if self.username:
                    s.login(self.username, self.password)
                s.send_message(msg)
        except (smtplib.SMTPException, OSError) as e:
            if cut is not None and cut.fired:
                raise NotifyError(f"SMTP {self.host}:{self.port}: not done within {TIMEOUT_S:g} s") from None
            raise NotifyError(f"SMTP {self.host}:{self.port}: {type(e).__name__}: {e}") from None


def build_notifiers(d: dict[str, Any], allow_private: bool) -> list[Notifier]:
    """Notifiers for one ``receivers:`` entry."""
    name = str(d.get("name") or "")
    if not name:
        raise RuleError("a receiver needs a name")
    out: list[Notifier] = []
    for key in ("webhook", "slack"):
        for cfg in _list(d.get(key) or d.get(f"{key}_configs")):
            url = str(cfg.get("url") or "")
            if not url.startswith(("http://", "https://")):
                raise RuleError(f"receiver {name}: {key} url must be http(s)")
            if key == "webhook":
                out.append(WebhookNotifier(name, url, allow_private, _headers(name, cfg.get("headers")),
                                           _max_alerts(name, cfg.get("max_alerts"))))
            else:
                out.append(SlackNotifier(name, url, allow_private, str(cfg.get("channel") or "")))
    for cfg in _list(d.get("email") or d.get("email_configs")):
        to = cfg.get("to") or []
        to = [to] if isinstance(to, str) else [str(x) for x in to]
        if not to or not cfg.get("smarthost"):
            raise RuleError(f"receiver {name}: email needs to and smarthost")
        out.append(EmailNotifier(name, to, str(cfg.get("from") or "tracehouse@localhost"), str(cfg["smarthost"]),
                                 allow_private, bool(cfg.get("starttls", False)), str(cfg.get("username") or ""),
                                 str(cfg.get("password") or "")))
    return out


_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x20-\x7e\t]*")
#: headers the HTTP client writes itself (a second one would make the request ambiguous)
_OWN_HEADERS = frozenset(("host", "content-length", "transfer-encoding", "connection", "content-type"))


def _headers(receiver: str, raw: Any) -> dict[str, str]:
    """A webhook's extra headers, checked when the configuration loads: a name that is not an HTTP
    token or a value with a line break or a non-ASCII character would otherwise fail only when an
    alert fires (every attempt, for ever). The value is never quoted: it is often a secret."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RuleError(f"receiver {receiver}: webhook headers must be a mapping")
    out = {}
    for k, v in raw.items():
        k, v = str(k), str(v)
        if not _TOKEN.fullmatch(k):
            raise RuleError(f"receiver {receiver}: webhook header name {k[:60]!r} is not a valid HTTP header name")
        if k.lower() in _OWN_HEADERS:
            raise RuleError(f"receiver {receiver}: webhook header {k} is set by tracehouse itself")
        if not _VALUE.fullmatch(v):
            raise RuleError(f"receiver {receiver}: webhook header {k} has a line break, control or non-ASCII "
                            "character in its value")
        out[k] = v
    return out


def _max_alerts(receiver: str, raw: Any) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise RuleError(f"receiver {receiver}: webhook max_alerts must be a whole number (0 = all alerts)")
    return raw


def _list(v: Any) -> list[dict[str, Any]]:
    if v is None:
        return []
    items = v if isinstance(v, list) else [v]
    if not all(isinstance(x, dict) for x in items):
        raise RuleError("receiver settings must be mappings")
    return items
