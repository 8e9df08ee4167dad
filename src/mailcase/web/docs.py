"""The API documentation at /docs, served whole by mailcase: it works offline.

FastAPI's default /docs page loads Swagger UI's script and style from a CDN (and ReDoc at
/redoc likewise), so on a machine without Internet access (an intranet mail host) the page
stayed blank, and every operator's browser told the CDN who looked at our API. The assets
come instead from the `swagger-ui-bundle` package (PyPI) and are served under /docs/static;
Swagger UI's online validator badge (validator.swagger.io) is switched off. ReDoc is not
offered: no package ships its script.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["STATIC", "add_docs"]

STATIC = "/docs/static"


def add_docs(app: FastAPI) -> None:
    """/docs and its assets on `app`, which must be built with `docs_url=None` and
    `redoc_url=None` (FastAPI's CDN pages)."""
    app.mount(STATIC, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
