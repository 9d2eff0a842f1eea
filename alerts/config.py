"""Rule files: ``groups`` of rules, plus ``receivers``, ``route``, ``inhibit_rules`` and
``notifications`` (the Prometheus rule file and the Alertmanager configuration in one YAML).
Several files merge: their groups add up; receivers/route/inhibit rules come from whichever
files define them (a second ``route`` is an error)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from .notifiers import Notifier, build_notifiers
from .notify import Route, parse_route
from .rules import Rule, RuleError, duration, parse_rule
from .silences import InhibitRule, parse_inhibit_rule
from .templates import check

_TOP = {"groups", "receivers", "route", "inhibit_rules", "notifications"}


@dataclass
class AlertConfig:
    rules: list[Rule] = field(default_factory=list)
    receivers: dict[str, list[Notifier]] = field(default_factory=dict)
    route: Route | None = None
    inhibit_rules: list[InhibitRule] = field(default_factory=list)
    allow_private_destinations: bool = False


def load_files(paths: list[str], allow_private: bool | None = None) -> AlertConfig:
    docs = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RuleError(f"{p}: {e}") from None
        if not isinstance(d, dict):
            raise RuleError(f"{p}: the top level must be a mapping")
        docs.append((os.path.abspath(p), d))
    return build_config(docs, allow_private)


def build_config(docs: list[tuple[str, dict[str, Any]]], allow_private: bool | None = None) -> AlertConfig:
    cfg = AlertConfig()
    raw_receivers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, d in docs:
        unknown = set(d) - _TOP
        if unknown:
            raise RuleError(f"{path}: unknown top-level keys {sorted(unknown)}")
        notif = d.get("notifications") or {}
        if not isinstance(notif, dict):
            raise RuleError(f"{path}: notifications must be a mapping")
        if notif.get("allow_private_destinations"):
            cfg.allow_private_destinations = True
        for g in _listed(d, "groups", path):
            _read_group(path, g, cfg, seen)
        raw_receivers.extend(_listed(d, "receivers", path))
        if d.get("route") is not None:
            if cfg.route is not None:
                raise RuleError(f"{path}: route is defined in more than one file")
            cfg.route = parse_route(d["route"])
        cfg.inhibit_rules.extend(parse_inhibit_rule(x) for x in _listed(d, "inhibit_rules", path))
    if allow_private is not None:
        cfg.allow_private_destinations = allow_private
    cfg.receivers = _receivers(raw_receivers, cfg.allow_private_destinations)
    if cfg.route is not None:
        _check_receivers(cfg.route, cfg.receivers)
    return cfg


def _receivers(raw: list[Any], allow_private: bool) -> dict[str, Any]:
    """The notifiers of each receiver, by name (once each)."""
    out: dict[str, Any] = {}
    for r in raw:
        if not isinstance(r, dict):
            raise RuleError("receivers must be mappings")
        name = str(r.get("name") or "")
        if name in out:
            raise RuleError(f"duplicate receiver {name}")
        out[name] = build_notifiers(r, allow_private)
    return out


def _listed(d: dict[str, Any], key: str, where: str) -> list[Any]:
    """``d[key]`` as a list (absent or empty: none); anything else is refused, not iterated (a
    text would be read letter by letter, a mapping key by key)."""
    v = d.get(key) or []
    if not isinstance(v, list):
        raise RuleError(f"{where}: {key} must be a list")
    return v


def _read_group(path: str, g: Any, cfg: AlertConfig, seen: set[str]) -> None:
    name = g.get("name") if isinstance(g, dict) else None
    # a text, or a number YAML read from one (name: 2024)
    if isinstance(name, bool) or not isinstance(name, (str, int)) or name in ("", None):
        raise RuleError(f"{path}: every group needs a name (a text)")
    name = str(name)
    interval = duration(g.get("interval", "10s"), f"group {name}.interval")
    offset = None if g.get("query_offset") is None else duration(g["query_offset"], f"group {name}.query_offset")
    for r in _listed(g, "rules", f"{path}: group {name}"):
        try:
            rule = parse_rule(r, name, interval, source=f"file:{path}", query_offset=offset)
            for text in rule.annotations.values():
                check(text)
        except (RuleError, ValueError) as e:
            raise RuleError(f"{path}: {e}") from None
        if rule.id in seen:
            raise RuleError(f"{path}: duplicate rule {rule.id}")
        seen.add(rule.id)
        cfg.rules.append(rule)


def _check_receivers(route: Route, receivers: dict[str, Any]) -> None:
    if route.receiver not in receivers:
        raise RuleError(f"route refers to unknown receiver {route.receiver!r}")
    for c in route.routes:
        _check_receivers(c, receivers)
