"""The text of a notification for Slack and email, bounded whatever the alerts' labels hold.

Label values come from the data (span attributes, up to 16,384 characters each, or a SQL rule's
columns) and annotations from templates (up to 4,000 characters), so every part is cut here:

- Both: the first line and each alert's line are one line (a value's line breaks are spaces), so a
  label value cannot forge an alert's line.
- Slack: ``&``, ``<`` and ``>`` are Slack's control characters in ``text`` and are escaped
  (``&amp;`` ``&lt;`` ``&gt;``, https://api.slack.com/reference/surfaces/formatting#escaping), so a
  value of ``<!channel>`` is shown, not a mention of the whole channel; the text stays under Slack's
  40,000 characters (longer is refused for good with ``msg_too_long``).
- Email: the Alertmanager payload appended to the text lists the alerts that fit in
  :data:`EMAIL_JSON_CHARS`; the others are counted in its ``truncatedAlerts`` and said in the text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

#: alerts listed by name in a Slack message or an email's text
SHOWN_ALERTS = 20
HEAD_CHARS = 2000  # the first line (status and group labels)
LINE_CHARS = 1200  # an alert's line, its link aside
LINK_CHARS = 600  # an alert's dashboard link (dropped when longer)
#: the payload's JSON in an email's body at most (SMTP relays refuse mails of tens of MB)
EMAIL_JSON_CHARS = 256 << 10
_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def slack_escape(text: str, limit: int | None = None) -> str:
    """``text`` with Slack's control characters escaped, cut (never inside an escape) to ``limit``."""
    out: list[str] = []
    size = 0
    for c in text:
        e = _SLACK_ESCAPES.get(c, c)
        if limit is not None and size + len(e) > limit - 1:
            out.append("…")
            break
        out.append(e)
        size += len(e)
    return "".join(out)


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (line breaks, tabs, controls) as a space:
    a label value from the data never starts a line of its own (a mail header, a forged alert line)."""
    return "".join(c if c.isprintable() else " " for c in text)


def _plain(text: str, limit: int | None = None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"


def summary(message: dict[str, Any], cut: Callable[[str, int | None], str] = _plain, slack: bool = False) -> str:
    """The first line (status, count, group labels), one line per alert (at most SHOWN_ALERTS), and
    how many more there are; every part through ``cut(text, limit)`` (escape and bound)."""
    alerts = message["alerts"]
    head = f"[{message['status'].upper()}:{len(alerts)}] " + \
        ", ".join(f"{k}={v}" for k, v in message["groupLabels"].items())
    lines = [cut(one_line(head), HEAD_CHARS)]
    for a in alerts[:SHOWN_ALERTS]:
        ann = a.get("annotations", {})
        text = ann.get("summary") or ann.get("description") or a["labels"].get("alertname", "")
        line = f"• {a['status']}: " + cut(one_line(str(text)), LINE_CHARS)
        link = one_line(str(ann.get("dashboard", "")))
        if link and slack:
            link = slack_escape(link.replace("|", "%7C"))
            if len(link) <= LINK_CHARS:
                line += f" <{link}|dashboard>"
        elif link:
            line += " " + cut(link, LINK_CHARS)
        lines.append(line)
    if len(alerts) > SHOWN_ALERTS:
        lines.append(f"… and {len(alerts) - SHOWN_ALERTS} more")
    return "\n".join(lines)


def slack_text(message: dict[str, Any]) -> str:
    return summary(message, slack_escape, slack=True)


def email_body(message: dict[str, Any]) -> str:
    """The summary, then the webhook payload with as many alerts as fit in EMAIL_JSON_CHARS."""
    listed: list[dict[str, Any]] = []
    size = len(json.dumps({**message, "alerts": []}, indent=2))
    for a in message["alerts"]:
        text = json.dumps(a, indent=2)
        n = len(text) + 4 * (text.count("\n") + 1) + 2  # indented 4 more in the list, and the comma
        if size + n > EMAIL_JSON_CHARS:
            break
        listed.append(a)
        size += n
    left = len(message["alerts"]) - len(listed)
    payload = {**message, "alerts": listed, "truncatedAlerts": message.get("truncatedAlerts", 0) + left}
    note = f"\n\n{left} of the {len(message['alerts'])} alerts are not in the JSON below (too large)" if left else ""
    return summary(message) + note + "\n\n" + json.dumps(payload, indent=2)
