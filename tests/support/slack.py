"""A local stand-in for a Slack incoming webhook that checks what Slack checks.

Slack's incoming webhooks take ``POST`` with ``Content-Type: application/json`` and a JSON object
carrying ``text`` (a non-empty string, at most 40,000 characters) and/or ``blocks`` (a list), plus
optional ``channel``, ``username``, ``icon_emoji``, ``icon_url``, ``attachments``, ``mrkdwn``,
``unfurl_links``, ``unfurl_media``, ``thread_ts``. It answers ``200 ok``, or ``400`` with
``invalid_payload`` / ``no_text`` / ``channel_not_found``; rate limits are ``429`` with
``Retry-After`` (seconds). ``fail_next`` queues answers to give before accepting (``500``, ``429``).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALLOWED = {"text", "blocks", "attachments", "channel", "username", "icon_emoji", "icon_url", "mrkdwn",
           "unfurl_links", "unfurl_media", "thread_ts"}


def slack_problem(content_type: str, raw: bytes) -> str:
    """'' when Slack would accept the body, else the error word Slack answers with."""
    if not content_type.split(";")[0].strip() == "application/json":
        return "invalid_payload"
    try:
        body = json.loads(raw)
    except ValueError:
        return "invalid_payload"
    if not isinstance(body, dict) or set(body) - ALLOWED:
        return "invalid_payload"
    text, blocks = body.get("text"), body.get("blocks")
    if blocks is not None and not isinstance(blocks, list):
        return "invalid_blocks"
    if not blocks and not (isinstance(text, str) and text.strip()):
        return "no_text"
    if isinstance(text, str) and len(text) > 40_000:
        return "msg_too_long"
    channel = body.get("channel")
    if channel is not None and not (isinstance(channel, str) and channel[:1] in "#@CGD" and len(channel) > 1):
        return "channel_not_found"
    for key in ("username", "icon_emoji", "icon_url", "thread_ts"):
        if key in body and not isinstance(body[key], str):
            return "invalid_payload"
    return ""


class SlackReceiver:
    def __init__(self, retry_after: int = 1):
        self.accepted: list[dict] = []
        self.times: list[float] = []
        self.refused: list[tuple[int, str]] = []  # (status, reason) of every answer other than 200
        self.fail_next: list[int] = []
        self.retry_after = retry_after
        self._lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, answer, extra = 200, "ok", {}
                with outer._lock:
                    problem = slack_problem(self.headers.get("content-type", ""), raw)
                    if problem:
                        status, answer = 400, problem
                    elif outer.fail_next:
                        status = outer.fail_next.pop(0)
                        answer = "rate_limited" if status == 429 else "internal_error"
                        if status == 429:
                            extra["Retry-After"] = str(outer.retry_after)
                    else:
                        outer.accepted.append(json.loads(raw))
                        outer.times.append(time.monotonic())
                    if status != 200:
                        outer.refused.append((status, answer))
                data = answer.encode()
                self.send_response(status)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/XXXX"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
