"""Every route declares who may call it: public on purpose, or guarded by roles."""

from __future__ import annotations

from server.app import create_app
from server.settings import load_settings


def test_every_route_is_public_or_role_guarded() -> None:
    app = create_app(load_settings({}))
    undeclared = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            path = route.path
            if path.startswith("/docs") or handler.http_methods == {"OPTIONS"}:
                continue  # OpenAPI docs and CORS preflight are public by design
            public = handler.opt.get("public") is True
            guarded = [g for g in handler.guards or [] if hasattr(g, "roles")]
            if public == bool(guarded):  # neither, or contradictory
                undeclared.append(f"{sorted(handler.http_methods)} {path}")
    assert undeclared == []
