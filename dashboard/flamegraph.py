"""Thread snapshots → a flame graph (pure).

Every thread of every snapshot is one sample: its stack, outermost frame first, adds one to each
node on its path from the root. Frames merge by function and file (lines differ as execution
moves through a function; the lines seen are kept for the tooltip). Over many snapshots of a
service this is a sampling profile of where its threads spend their time — a poor man's
continuous profiler built from the agent's thread dumps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from tracehouse.storage import is_digits

from . import snapshots
from .figures import plain

MAX_NODES = 4000
ROOT = "all threads"


class Node:
    __slots__ = ("function", "file", "lines", "value", "self_value", "children")

    def __init__(self, function: str, file: str):
        self.function = function
        self.file = file
        self.lines: set[str] = set()
        self.value = 0
        self.self_value = 0
        self.children: dict[tuple[str, str], Node] = {}


def thread_stacks(body: Any) -> list[list[dict[str, Any]]]:
    """The stacks of a thread snapshot body, each outermost frame first (the agent lists them
    innermost first). Anything malformed is skipped."""
    threads = body.get("threads") if isinstance(body, dict) else None
    out = []
    for t in threads if isinstance(threads, list) else []:
        if isinstance(t, dict) and isinstance(t.get("stack"), list):
            out.append(snapshots.frames(t["stack"])[::-1])
    return out


def merge(stacks: Iterable[list[dict[str, Any]]]) -> Node:
    """One tree of all ``stacks`` (each outermost first)."""
    root = Node(ROOT, "")
    for stack in stacks:
        root.value += 1
        node = root
        for f in stack:
            key = (f["function"], f["file"])
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = Node(*key)
            child.value += 1
            if f["line"] != "" and len(child.lines) < 8:
                child.lines.add(str(f["line"]))
            node = child
        node.self_value += 1
    return root


def icicle(root: Node, max_nodes: int = MAX_NODES) -> dict[str, Any]:
    """Plotly ``icicle`` arrays (ids, labels, parents, values, hover text), biggest nodes first;
    beyond ``max_nodes`` the smallest subtrees are left out (their samples still count in their
    parents)."""
    ids, labels, parents, values, text = [], [], [], [], []
    queue = deque([(root, "")])
    n = 0
    while queue and n < max_nodes:
        node, parent = queue.popleft()
        nid = f"n{n}"
        n += 1
        ids.append(nid)
        labels.append(node.function or "?")
        parents.append(parent)
        values.append(node.value)
        where = plain(f"{node.file}:{','.join(sorted(node.lines, key=_line_key))}") if node.file else ""
        pct = 100.0 * node.value / max(1, root.value)
        text.append(f"{where}<br>{node.value} samples ({pct:.1f}%), {node.self_value} on top" if where
                    else f"{node.value} samples")
        for child in sorted(node.children.values(), key=lambda c: -c.value):
            queue.append((child, nid))
    return {"ids": ids, "labels": labels, "parents": parents, "values": values, "text": text,
            "depth": depth(root), "truncated": bool(queue)}


def _line_key(s: str) -> tuple[int, str]:
    return (int(s), s) if is_digits(s) else (1 << 30, s)


def depth(root: Node) -> int:
    deepest, stack = 0, [(root, 0)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in node.children.values())
    return deepest


def top_self(root: Node, top: int = 15) -> list[dict[str, Any]]:
    """Functions by samples where they were the innermost frame (where threads actually were)."""
    acc: dict[tuple[str, str], int] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if node is not root and node.self_value:
            acc[(node.function, node.file)] = acc.get((node.function, node.file), 0) + node.self_value
        stack.extend(node.children.values())
    total = max(1, root.value)
    rows = sorted(acc.items(), key=lambda kv: -kv[1])[:top]
    return [{"function": f, "file": file, "samples": n, "share": n / total} for (f, file), n in rows]
