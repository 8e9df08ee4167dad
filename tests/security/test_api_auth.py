"""API authentication over every route: each route of the FastAPI app, found by iterating the
app's own route table (so a route added later is covered without editing this test), must
refuse a request without a token, with a made-up token and with a revoked token. Only
/healthz (liveness) and the API documentation (/docs with its assets, /openapi.json) are public.
The app is built in this process only to list its routes; the requests go to a running
mailcase over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import BaseRoute, Route

from mailcase.config import Settings
from mailcase.metrics import Metrics
from mailcase.storage.db import make_engine
from mailcase.web.app import create_app
from tests.support.platform import Platform

PUBLIC = {"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"}


def _flatten(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[Route]:
    """Every endpoint route, also inside included routers (FastAPI >= 0.120 keeps an included
    router as one `_IncludedRouter` entry, older versions copy its routes into the app)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _flatten(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Route):
            yield route if not prefix else Route(prefix + route.path, route.endpoint,
                                                 methods=list(route.methods or ()))


def _routes(tmp: Path) -> list[tuple[str, str]]:
    """(method, path with every {parameter} filled in) of every route of the app."""
    engine = make_engine(f"sqlite:///{tmp / 'routes.db'}")
    try:
        app = create_app(engine, Metrics(), settings=Settings(data_dir=tmp), enqueue_hooks=())
    finally:
        engine.dispose()
    routes = list(_flatten(app.routes))
    paths = {r.path for r in routes}
    # Nothing the schema lists is missed by the walk (a FastAPI change would show here).
    assert set(app.openapi()["paths"]) <= paths, set(app.openapi()["paths"]) - paths
    out = []
    for route in routes:
        if route.path in PUBLIC:
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


@pytest.fixture(scope="module")
def revoked(platform: Platform) -> str:
    token = platform.cli("token", "create", "to-revoke").stdout.strip()
    platform.cli("token", "revoke", "to-revoke")
    return token


@pytest.fixture(scope="module")
def http(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.http_base, timeout=30) as client:
        yield client


def test_every_route_but_health_and_docs_refuses_without_a_valid_token(
    platform: Platform, http: httpx.Client, revoked: str, tmp_path: Path,
) -> None:
    routes = _routes(tmp_path)
    assert ("GET", "/api/v1/messages/1/raw") in routes and len(routes) > 30  # the table is read
    credentials = {
        "no token": {},
        "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "made-up token": {"Authorization": "Bearer mc_made_up_token"},
        "revoked token": {"Authorization": f"Bearer {revoked}"},
    }
    accepted = []
    for method, path in routes:
        for what, headers in credentials.items():
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = http.request(method, path, headers=headers, json=body)
            if r.status_code != 401:
                accepted.append(f"{method} {path} with {what}: {r.status_code}")
    assert accepted == []


def test_a_valid_token_is_accepted_and_the_public_routes_stay_public(
    platform: Platform, http: httpx.Client, tmp_path: Path,
) -> None:
    """The counterpart: the refusals above come from the token check, not a broken server;
    and a path parameter that names nothing is a clear 4xx, never a 500."""
    with platform.api() as api:
        answers = {path: api.get(path).status_code
                   for method, path in _routes(tmp_path) if method == "GET"}
    assert {p: c for p, c in answers.items() if c == 401 or c >= 500} == {}
    assert http.get("/healthz").status_code == 200
    assert http.get("/openapi.json").status_code == 200
    assert http.get("/docs").status_code == 200
