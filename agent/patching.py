"""Replace a method with a wrapper that remembers the original, and put the original back."""

from __future__ import annotations

ORIGINAL = "_tracehouse_original"


def patch(owner, name: str, make) -> None:
    """``owner.name = make(owner.name)``, once: a method already patched is left as it is."""
    current = getattr(owner, name)
    if getattr(current, ORIGINAL, None) is not None:
        return
    wrapper = make(current)
    setattr(wrapper, ORIGINAL, current)
    setattr(owner, name, wrapper)


def unpatch(owner, name: str) -> None:
    original = getattr(getattr(owner, name), ORIGINAL, None)
    if original is not None:
        setattr(owner, name, original)
