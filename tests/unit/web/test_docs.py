"""Issue 12 item 15: /docs works offline: the page references no other host, and every
asset it loads is served by mailcase itself."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx

from mailcase.config import Settings
from mailcase.metrics import Metrics
from mailcase.storage.db import make_engine
from mailcase.web.app import create_app


async def test_docs_page_and_its_assets_come_from_mailcase(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'docs.db'}")
    app = create_app(engine, Metrics(), settings=Settings(data_dir=tmp_path), enqueue_hooks=())
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailcase.test") as client:
            page = await client.get("/docs")
            assert page.status_code == 200 and "swagger-ui" in page.text
            # Every URL in the page: attributes and the script's string literals.
            urls = set(re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page.text))
            urls |= set(re.findall(r"""["'](https?://[^"']+|//[^"']+)""", page.text))
            urls |= set(re.findall(r"""url:\s*['"]([^'"]+)""", page.text))
            assert {u for u in urls if urlparse(urljoin("http://mailcase.test/docs", u)).netloc
                    != "mailcase.test"} == set(), urls
            assert re.search(r'"validatorUrl":\s*null', page.text), "online validator badge"
            assets = {u for u in urls if u.startswith("/")}
            assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css",
                    "/openapi.json"} <= assets, assets
            for url in assets:
                res = await client.get(url)
                assert res.status_code == 200 and res.content, url
            assert (await client.get("/docs/oauth2-redirect")).status_code == 200
            assert (await client.get("/redoc")).status_code == 404  # it loaded from a CDN
    finally:
        engine.dispose()
