"""The gallery and task pages: the key's tasks newest first with their images, filters by
model, state and days, paging, a task's detail with its lineage, and upscale / variation /
reroll through reimagine (CSRF-checked); in process and in headless Chromium."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from playwright.sync_api import Browser

from app.console.gallery import PAGE_SIZE
from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import runtime_of, wait_for_terminal
from tests.support.browser import sign_in, snap
from tests.support.console import ConsoleServer, console_sign_in

MODEL = "gpt-image-2-text-to-image"
OTHER_MODEL = "gpt-image-1"
TILE = re.compile(r'<article class="tile" data-task-id="([^"]+)"')
HTMX = {"HX-Request": "true"}
KEY_TOKEN = re.compile(r"\bsk_[A-Za-z0-9_-]{20,}")  # an API key (not the "sk_" of "task_")


async def _create(client: httpx.AsyncClient, customer: Customer, model: str = MODEL) -> str:
    answer = await client.post(
        "/api/v1/jobs/createTask",
        json={"model": model, "input": {"prompt": "a quiet harbour", "quality": "low"}},
        headers=customer.headers,
    )
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["data"]["taskId"]
    return task_id


async def _tiles(client: httpx.AsyncClient, **params: str | int) -> list[str]:
    page = await client.get("/console/gallery", params=params)
    assert page.status_code == 200, page.text
    return TILE.findall(page.text)


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    answer = await client.get("/api/v1/account", headers=customer.headers)
    return int(answer.json()["data"]["balance"])


async def test_newest_first_filters_and_paging(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    customer = await make_customer(runtime, tier="pro", credits=1000)
    stranger = await make_customer(runtime)
    created = [await _create(client, customer) for _ in range(PAGE_SIZE + 1)]
    created.append(await _create(client, customer, OTHER_MODEL))
    await _create(client, stranger)  # another key's task is never shown
    for task_id in created:
        await wait_for_terminal(client, customer.headers, task_id)
    await console_sign_in(client, customer.key)

    newest_first = list(reversed(created))
    first = await client.get("/console/gallery")
    assert TILE.findall(first.text) == newest_first[:PAGE_SIZE]
    assert f"{len(created)} tasks, page 1 of 2" in first.text
    assert first.text.count('<img class="thumb"') == PAGE_SIZE  # every tile has its image
    assert 'href="/console/gallery?page=2" id="older"' in first.text
    assert 'id="newer"' not in first.text
    second = await client.get("/console/gallery", params={"page": 2})
    assert TILE.findall(second.text) == newest_first[PAGE_SIZE:]
    assert 'href="/console/gallery?page=1" id="newer"' in second.text

    assert await _tiles(client, model=OTHER_MODEL) == [created[-1]]
    by_model = await client.get("/console/gallery", params={"model": MODEL, "page": 2})
    assert TILE.findall(by_model.text) == [created[0]]
    assert f"model={MODEL}&amp;page=1" in by_model.text  # paging keeps the filters
    assert len(await _tiles(client, state="success")) == PAGE_SIZE
    assert await _tiles(client, state="fail") == []
    today = datetime.now(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    assert len(await _tiles(client, start=today.isoformat(), end=today.isoformat())) == PAGE_SIZE
    assert await _tiles(client, end=yesterday) == []
    empty = await client.get("/console/gallery", params={"end": yesterday})
    assert "No tasks match these filters." in empty.text

    for params, text in (
        ({"start": today.isoformat(), "end": yesterday}, "end must not be before start"),
        ({"start": "01/12/2026"}, "start must be a date as YYYY-MM-DD"),
        ({"state": "done"}, "state must be one of queued, generating, success, fail"),
        ({"page": "0"}, "page must be an integer from 1"),
        ({"page": "two"}, "page must be an integer from 1"),
    ):
        refused = await client.get("/console/gallery", params=params)
        assert refused.status_code == 400, params
        assert text in refused.text and 'id="filters"' in refused.text


async def test_detail_and_reimagine_with_lineage(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    parent = await _create(client, customer)
    await wait_for_terminal(client, customer.headers, parent)
    csrf = await console_sign_in(client, customer.key)
    page = await client.get(f"/console/gallery/{parent}")
    assert page.status_code == 200, page.text
    assert '"prompt": "a quiet harbour"' in page.text and '"quality": "low"' in page.text
    assert '<div id="task-cost"><strong>2</strong> credits</div>' in page.text
    assert 'id="no-children"' in page.text and 'data-state="success"' in page.text
    assert re.search(r'<img class="result" src="[^"]+/media/', page.text)
    form = {"csrf_token": csrf, "action": "upscale", "index": "1"}

    # Without the CSRF token: refused, nothing created or charged.
    before = await _balance(client, customer)
    for data in ({**form, "csrf_token": ""}, {k: v for k, v in form.items() if k != "csrf_token"}):
        refused = await client.post(f"/console/gallery/{parent}/reimagine", data=data)
        assert refused.status_code == 403 and "invalid or missing CSRF token" in refused.text
    bad_index = await client.post(
        f"/console/gallery/{parent}/reimagine", data={**form, "index": "5"}
    )
    assert bad_index.status_code == 400 and "index must be from 1 to 1" in bad_index.text
    assert await _balance(client, customer) == before
    assert 'id="no-children"' in (await client.get(f"/console/gallery/{parent}")).text

    upscaled = await client.post(f"/console/gallery/{parent}/reimagine", data=form)
    assert upscaled.status_code == 303, upscaled.text
    child = upscaled.headers["location"].removeprefix("/console/gallery/")
    assert await _balance(client, customer) < before  # the upscale is charged
    await wait_for_terminal(client, customer.headers, child)
    child_page = await client.get(f"/console/gallery/{child}")
    assert f'href="/console/gallery/{parent}">{parent}</a>' in child_page.text
    assert "by <strong>upscale</strong> of its file #1" in child_page.text
    parent_page = await client.get(f"/console/gallery/{parent}")
    assert f'<li data-task-id="{child}"><strong>upscale</strong> of #1' in parent_page.text
    gallery = await client.get("/console/gallery")
    assert f'upscale of <a class="mono" href="/console/gallery/{parent}">' in gallery.text

    # Another key's task is not found; its page says so, not a stack trace.
    missing = await client.get("/console/gallery/task_000000000000ffffffffffffffff")
    assert missing.status_code == 404 and "task not found" in missing.text
    done = await client.get(f"/console/gallery/{child}/status?refresh=true", headers=HTMX)
    assert done.headers["HX-Refresh"] == "true"  # the page reloads to show the finished task
    status = await client.get("/console/gallery/nope/status", headers=HTMX)
    assert status.status_code == 404 and "task not found" in status.text


async def test_a_waiting_task_shows_its_place_and_cannot_be_reimagined(
    idle_app: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = idle_app
    customer = await make_customer(runtime_of(app))
    task_id = await _create(client, customer)
    csrf = await console_sign_in(client, customer.key)
    page = await client.get(f"/console/gallery/{task_id}")
    assert 'data-state="waiting"' in page.text
    assert (
        f'hx-get="/console/gallery/{task_id}/status?refresh=true" hx-trigger="every 1s"'
    ) in page.text
    polled = await client.get(f"/console/gallery/{task_id}/status?refresh=true", headers=HTMX)
    assert polled.status_code == 200 and "HX-Refresh" not in polled.headers
    assert "place 1 in the queue" in page.text
    answer = await client.post(
        f"/console/gallery/{task_id}/reimagine",
        data={"csrf_token": csrf, "action": "variation", "index": "1"},
    )
    assert answer.status_code == 400, answer.text
    assert "task_id: the task is queued; only a completed task can be reimagined" in answer.text


async def test_videos_get_players(client: httpx.AsyncClient, customer: Customer) -> None:
    answer = await client.post(
        "/api/v1/jobs/createTask",
        json={
            "model": "seedance-2.0-text-to-video",
            "input": {"prompt": "waves", "resolution": "480p", "duration": "5"},
        },
        headers=customer.headers,
    )
    task_id = answer.json()["data"]["taskId"]
    await wait_for_terminal(client, customer.headers, task_id)
    await console_sign_in(client, customer.key)
    gallery = await client.get("/console/gallery", params={"state": "success"})
    assert re.search(r'<video class="thumb" src="[^"]+\.mp4\?[^"]*" controls', gallery.text)
    page = await client.get(f"/console/gallery/{task_id}")
    player = re.search(r'<video class="result" src="([^"]+)" controls', page.text)
    assert player is not None
    video = await client.get(player.group(1).replace("&amp;", "&"))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


# Last in the module: once the module's browser is up, Playwright's sync API keeps an event
# loop running in this thread, where the async tests above could not run.
def test_playground_to_gallery_to_upscale_in_the_browser(
    browser: Browser, console_server: ConsoleServer
) -> None:
    customer = console_server.customer(credits=200)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, console_server.base_url, customer.key, next_path="/console/playground")
    page.fill("#in-prompt", "a paper boat on a pond")
    page.click("#generate")
    page.wait_for_selector("#run .task-status[data-state=success] img.result")
    task_id = page.get_attribute("#run .task-status", "id").removeprefix("status-")  # type: ignore[union-attr]

    page.click("nav a[href='/console/gallery']")
    tile = page.wait_for_selector(f"article.tile[data-task-id='{task_id}'] img.thumb")
    assert tile is not None
    page.wait_for_function(
        f"document.querySelector(\"article[data-task-id='{task_id}'] img\").naturalWidth > 0"
    )
    snap(page, "console-gallery")
    assert KEY_TOKEN.search(page.content()) is None
    page.click(f"article.tile[data-task-id='{task_id}'] .tile-media")
    page.wait_for_url(f"**/console/gallery/{task_id}")
    assert page.inner_text("#no-children")
    snap(page, "console-task")
    assert KEY_TOKEN.search(page.content()) is None

    page.click("#actions button:has-text('Upscale')")
    page.wait_for_selector("#parent")
    child_id = page.inner_text("#task-id")
    assert child_id != task_id
    assert page.get_attribute("#parent a", "href") == f"/console/gallery/{task_id}"
    # The child's page polls until its upscaled image shows.
    page.wait_for_selector(".task-status[data-state=success] img.result")
    snap(page, "console-task-upscaled")
    page.click("#parent a")
    page.wait_for_selector(f"#children li[data-task-id='{child_id}']")
    assert "upscale" in page.inner_text(f"#children li[data-task-id='{child_id}']")

    # Filters in the page's form.
    page.goto(console_server.base_url + "/console/gallery")
    page.select_option("#f-model", "image-upscale")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/console/gallery?model=image-upscale*")
    assert page.locator("article.tile").count() == 1
    assert page.get_attribute("article.tile", "data-task-id") == child_id
    snap(page, "console-gallery-filtered")
    context.close()
