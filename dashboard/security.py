"""Security headers on every response (pure ASGI middleware, no per-request allocations beyond
the header list).

CSP: scripts only from this origin (no inline script; data travels in
``<script type="application/json">`` blocks, which are not executed). plotly.js 3+/4 renders the
chart types used here without ``eval``, so no ``'unsafe-eval'``. Styles allow ``'unsafe-inline'``
because plotly.js injects <style> and the waterfall positions bars with style attributes; style
injection cannot run script.

Cache: every answer but the static files found (and what sets its own ``Cache-Control``) is
``no-store``; a static path's error (a 404 for a file a later version ships) is ``no-store`` too,
since browsers may keep a 404 heuristically: pages and API answers hold telemetry and who is signed in, and a browser's Back button
shows a stored page however old, so one stored before signing out was shown again after it.
"""

from __future__ import annotations

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")
CACHEABLE = ("/static/", "/favicon.ico")


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        cacheable = scope.get("path", "").startswith(CACHEABLE)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                found = message.get("status", 200) in (200, 206, 304)
                extra = HEADERS if cacheable and found else HEADERS + [NO_STORE]
                message["headers"] = list(message.get("headers", [])) + [h for h in extra if h[0] not in names]
            await send(message)

        return await self.app(scope, receive, send_with_headers)
