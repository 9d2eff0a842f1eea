"""Annotation templates: Jinja2 in a sandbox, with ``value``, ``labels``, ``alertname``,
``dashboard_url`` and ``rule_id``. Labels are data: autoescape is off because annotations are
plain text (notifiers escape for their own formats), and the sandbox refuses attribute tricks."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


def _human(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.4g}"


_env.filters["human"] = _human


@lru_cache(maxsize=512)
def _compile(text: str):
    return _env.from_string(text)


def check(text: str) -> None:
    """Raise ValueError if ``text`` is not a valid template."""
    try:
        _compile(text)
    except TemplateError as e:
        raise ValueError(f"bad template {text!r}: {e}") from None


def render(text: str, context: dict[str, Any]) -> str:
    """Render one annotation; a failing template gives its error text instead of raising."""
    if "{" not in text:
        return text
    try:
        return _compile(text).render(**context)
    except Exception as e:  # a broken template must not stop an alert from firing
        return f"<template error: {e}> {text}"


def render_all(templates: dict[str, str], value: float, labels: dict[str, str], dashboard_url: str,
               rule_id: str) -> dict[str, str]:
    ctx = {"value": _human(value) if value == value else "NaN", "raw_value": value, "labels": labels,
           "alertname": labels.get("alertname", ""), "dashboard_url": dashboard_url.rstrip("/"), "rule_id": rule_id}
    out = {k: render(v, ctx) for k, v in templates.items()}
    if "dashboard" not in out and dashboard_url:
        svc = labels.get("service")
        out["dashboard"] = f"{dashboard_url.rstrip('/')}/services/{svc}" if svc else f"{dashboard_url.rstrip('/')}/alerts"
    return out
