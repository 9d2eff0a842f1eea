"""Which modules an instrumentation entry point instruments, read from package metadata only.

An instrumentation package names the libraries it instruments as requirements of its
``instruments`` (or ``instruments-any``) extra: ``redis >= 2.6``. The modules a library
installs are read from its own metadata (``top_level.txt``, else the files of its ``RECORD``).
Nothing is imported: loading an instrumentor imports the library it instruments, which is what
the agent defers until the host imports that library itself.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

_EXTRAS = ("instruments", "instruments-any")
_NOT_MODULES = (".dist-info", ".egg-info", ".data", ".pth")


def _required(dist) -> list[str]:
    names = []
    for line in dist.requires or ():
        try:
            req = Requirement(line)
        except InvalidRequirement:  # as the SDK's own dependency check: a line it cannot read names nothing
            continue
        if req.marker is not None and any(req.marker.evaluate({"extra": e}) for e in _EXTRAS):
            names.append(req.name)
    return names


def top_level(dist) -> list[str]:
    """Importable top-level names a distribution installs."""
    text = dist.read_text("top_level.txt")
    if text:
        return [n.strip() for n in text.splitlines() if n.strip().isidentifier()]
    names: list[str] = []
    for f in dist.files or ():
        parts = f.parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(_NOT_MODULES):
            continue
        name = parts[0][:-3] if len(parts) == 1 and parts[0].endswith(".py") else parts[0] if len(parts) > 1 else ""
        if name.isidentifier() and name not in names:
            names.append(name)
    return names


def modules(ep) -> tuple[str, ...]:
    """Modules whose first import should load the instrumentor; () means load it at once.

    From the ``instruments`` requirements' installed distributions; an instrumentation that
    names none (the standard library's: ``sqlite3``, ``asyncio``, ``logging``) is keyed on its
    entry point's name when that is a module.
    """
    found: list[str] = []
    dist = getattr(ep, "dist", None)
    if dist is not None:
        for name in _required(dist):
            try:
                found += [m for m in top_level(metadata.distribution(name)) if m not in found]
            except metadata.PackageNotFoundError:  # one of "instruments-any" that is not installed
                continue
    if not found and ep.name.isidentifier():
        try:
            if importlib.util.find_spec(ep.name) is not None:
                found.append(ep.name)
        except (ImportError, ValueError):  # not a module here: the instrumentor loads at once
            pass
    return tuple(found)
