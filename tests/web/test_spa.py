"""The web app at /app: built files, index.html for the app's own routes, caching, and a clear answer when unbuilt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from pulse.settings import Settings
from pulse.web.app import create_app
from pulse.web.routes.spa import spa_dist

INDEX = "<!doctype html><title>Pulse</title><script type=module src=/app/assets/index-abc123.js></script>"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "index-abc123.js").write_text("console.log('pulse')")
    (root / "theme.js").write_text("/* theme */")
    (tmp_path / "secret.txt").write_text("outside the app")
    return root


@pytest.fixture
async def app_client(settings: Settings, dist: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(settings.replace(spa_dist=str(dist)))) as c:
        yield c


@pytest.mark.parametrize("path", ["/app", "/app/", "/app/devices", "/app/devices/pump-7", "/app/operator/noc?x=1"])
async def test_app_pages_answer_index_html_for_the_browser_router(app_client: AsyncTestClient[Litestar],
                                                                 path: str) -> None:
    response = await app_client.get(path)

    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp


async def test_hashed_assets_are_cached_for_good_and_other_files_revalidated(
        app_client: AsyncTestClient[Litestar]) -> None:
    asset = await app_client.get("/app/assets/index-abc123.js")
    assert asset.status_code == 200
    assert asset.text == "console.log('pulse')"
    assert asset.headers["content-type"].startswith("text/javascript")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"

    theme = await app_client.get("/app/theme.js")
    assert theme.status_code == 200 and theme.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/app/assets/gone-123.js", "/app/nothing.css"])
async def test_a_missing_file_is_404_not_the_index(app_client: AsyncTestClient[Litestar], path: str) -> None:
    response = await app_client.get(path)

    assert response.status_code == 404
    assert "<!doctype" not in response.text


@pytest.mark.parametrize("path", ["/app/../secret.txt", "/app/%2e%2e/secret.txt", "/app/assets/%2e%2e/%2e%2e/secret.txt"])
async def test_files_outside_the_built_app_are_never_served(app_client: AsyncTestClient[Litestar], path: str) -> None:
    response = await app_client.get(path)

    assert "outside the app" not in response.text


async def test_an_unbuilt_app_answers_503_saying_how_to_build_it(settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    async with AsyncTestClient(app=create_app(settings.replace(spa_dist=str(missing)))) as c:
        response = await c.get("/app/devices")

    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")
    assert "not built" in response.text and "scripts/spa.sh" in response.text and str(missing) in response.text


def test_the_default_location_is_spa_dist_of_the_source_tree(settings: Settings) -> None:
    assert spa_dist(settings.replace(spa_dist=None)) == Path(__file__).resolve().parents[2] / "spa" / "dist"


async def test_a_query_parameter_does_not_choose_the_file(app_client: AsyncTestClient[Litestar]) -> None:
    response = await app_client.get("/app?path=assets/index-abc123.js")

    assert response.text == INDEX
