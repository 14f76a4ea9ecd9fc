"""The playground: a form made from the model's catalog schema, the live estimate (the API's
own), a create charged to the signed-in key under its limits, the task watched until its
image shows, refusals naming the field, and CSRF; in process and in headless Chromium."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from playwright.sync_api import Browser

from app.runtime import Runtime
from tests.conftest import Customer, make_customer
from tests.support.apps import eventually
from tests.support.browser import sign_in, snap
from tests.support.console import ConsoleServer, console_sign_in

MODEL = "gpt-image-2-text-to-image"  # base 4 credits; quality low x0.5, high x2
TASK_LINK = re.compile(r'href="/console/gallery/(task_[A-Za-z0-9_-]+)"')
MEDIA_SRC = re.compile(r'<img class="result" src="([^"]+)"')
HTMX = {"HX-Request": "true"}
KEY_TOKEN = re.compile(r"\bsk_[A-Za-z0-9_-]{20,}")  # an API key (not the "sk_" of "task_")


def _form(csrf: str, **inputs: str) -> dict[str, str]:
    return {"csrf_token": csrf, "model": MODEL, "prompt": "a lighthouse at dawn", **inputs}


async def _balance(client: httpx.AsyncClient, customer: Customer) -> int:
    answer = await client.get("/api/v1/account", headers=customer.headers)
    return int(answer.json()["data"]["balance"])


async def _task_count(client: httpx.AsyncClient, customer: Customer) -> int:
    answer = await client.get("/v1/tasks", headers=customer.headers)
    return int(answer.json()["total"])


async def test_the_form_is_the_models_schema(client: httpx.AsyncClient, customer: Customer) -> None:
    await console_sign_in(client, customer.key)
    page = await client.get("/console/playground", params={"model": MODEL})
    assert page.status_code == 200, page.text
    text = page.text
    # Enums are selects with their default chosen; required inputs are marked and required.
    quality = re.search(r'<select id="in-quality" name="quality">(.*?)</select>', text, re.S)
    assert quality is not None
    assert re.findall(r'<option value="(\w*)"', quality.group(1)) == ["low", "medium", "high"]
    assert '<option value="medium" selected>medium (default)' in quality.group(1)
    assert re.search(
        r'<textarea id="in-prompt" name="prompt"[^>]*maxlength="4000"[^>]* required', text
    )
    assert re.search(r'for="in-prompt">Prompt <span class="required"', text)
    # An optional input without a default may stay unset; integers are bounded numbers.
    assert '<option value="" selected>(not set: the model decides)</option>' in text
    assert re.search(
        r'name="output_compression" type="number" value="" step="1" min="0" max="100"', text
    )
    # Another model, another form.
    video = await client.get("/console/playground", params={"model": "seedance-2.0-text-to-video"})
    assert 'name="generate_audio"' in video.text and 'name="quality"' not in video.text
    unknown = await client.get("/console/playground", params={"model": "nope"})
    assert unknown.status_code == 400
    assert "model is not supported (allowed: gpt-image-2-text-to-image, " in unknown.text


async def test_the_estimate_is_the_apis(client: httpx.AsyncClient, customer: Customer) -> None:
    csrf = await console_sign_in(client, customer.key)
    for quality, credits in (("low", 2), ("medium", 4), ("high", 8)):
        shown = await client.post(
            "/console/playground/estimate", data=_form(csrf, quality=quality), headers=HTMX
        )
        assert shown.status_code == 200, shown.text
        assert f'<strong id="estimate-credits">{credits}</strong> credits' in shown.text
        api = await client.post(
            "/api/v1/jobs/estimate",
            json={"model": MODEL, "input": {"prompt": "x", "quality": quality}},
            headers=customer.headers,
        )
        assert api.json()["data"]["credits"] == credits
    high_4k = await client.post(
        "/console/playground/estimate", data=_form(csrf, quality="high", resolution="4K")
    )
    assert '<strong id="estimate-credits">32</strong>' in high_4k.text
    missing = await client.post("/console/playground/estimate", data=_form(csrf, prompt=""))
    assert missing.status_code == 400
    assert "prompt is required" in missing.text
    assert await _task_count(client, customer) == 0  # an estimate creates nothing


async def test_create_charges_the_key_and_the_image_shows(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    csrf = await console_sign_in(client, customer.key)
    before = await _balance(client, customer)
    form = _form(csrf, quality="high", request_id="console-test-1")
    created = await client.post("/console/playground", data=form, headers=HTMX)
    assert created.status_code == 200, created.text
    [task_id] = set(TASK_LINK.findall(created.text))
    # The next create gets a fresh request id (out of band), so it is a new task.
    assert 'id="request-id"' in created.text and "console-test-1" not in created.text
    assert await _balance(client, customer) == before - 8
    assert created.headers["HX-Trigger"] == "balance-changed"  # the estimate asks again
    # A double submit (same request id, same form) is the same task, charged once.
    again = await client.post("/console/playground", data=form, headers=HTMX)
    assert set(TASK_LINK.findall(again.text)) == {task_id}
    assert await _balance(client, customer) == before - 8

    async def finished() -> str | None:
        status = await client.get(f"/console/gallery/{task_id}/status", headers=HTMX)
        assert status.status_code == 200, status.text
        waiting = 'data-state="waiting"' in status.text
        if waiting:  # it polls itself while it waits, and shows where it is
            assert f'hx-get="/console/gallery/{task_id}/status"' in status.text
            assert re.search(r'<progress max="100" value="\d+"', status.text)
        return None if waiting else status.text

    done = await eventually(finished, what="the task to finish")
    assert 'data-state="success"' in done and "hx-trigger" not in done
    [src] = MEDIA_SRC.findall(done)
    image = await client.get(src.replace("&amp;", "&"))
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    # Without htmx, a create goes to the task's page.
    plain = await client.post("/console/playground", data=_form(csrf))
    assert plain.status_code == 303
    assert plain.headers["location"].startswith("/console/gallery/task_")


async def test_refusals_name_the_field(
    app: FastAPI, client: httpx.AsyncClient, customer: Customer, runtime: Runtime
) -> None:
    csrf = await console_sign_in(client, customer.key)
    cases = [
        ({"output_compression": "lots"}, 400, "output_compression must be a number"),
        ({"output_compression": "101"}, 400, "output_compression must be at most 100"),
        ({"quality": "ultra"}, 400, "quality must be one of low, medium, high"),
        ({"prompt": "  "}, 400, "prompt is required"),
        (
            {"resolution": "1024x1536", "aspect_ratio": "16:9"},
            400,
            "aspect_ratio 16:9 contradicts resolution 1024x1536",
        ),
        ({"model": "nope"}, 400, "model is not supported"),
    ]
    for inputs, status, text in cases:
        answer = await client.post("/console/playground", data=_form(csrf, **inputs), headers=HTMX)
        assert answer.status_code == status, (inputs, answer.text)
        assert text in answer.text, (inputs, answer.text)
        assert 'id="create-problem"' in answer.text
        plain = await client.post("/console/playground", data=_form(csrf, **inputs))
        assert plain.status_code == status and text in plain.text  # the page, not JSON
    assert await _task_count(client, customer) == 0

    poor = await make_customer(runtime, credits=3)
    async with _client_of(app) as other:
        await _refused_for_credits(other, poor)
    free = await make_customer(runtime, tier="free", credits=1000)
    async with _client_of(app) as other:
        await _refused_for_rate(other, free, runtime)


def _client_of(app: FastAPI) -> httpx.AsyncClient:
    """Another browser: a client with a cookie jar of its own."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def _refused_for_credits(client: httpx.AsyncClient, poor: Customer) -> None:
    poor_csrf = await console_sign_in(client, poor.key)
    short = await client.post(
        "/console/playground", data=_form(poor_csrf, quality="high"), headers=HTMX
    )
    assert short.status_code == 402
    assert "insufficient credits (this needs 8 credits; the balance is 3)" in short.text
    assert await _balance(client, poor) == 3 and await _task_count(client, poor) == 0


async def _refused_for_rate(client: httpx.AsyncClient, free: Customer, runtime: Runtime) -> None:
    free_csrf = await console_sign_in(client, free.key)
    limit = runtime.settings.tier_limits("free").create_per_minute
    answers = [
        await client.post("/console/playground", data=_form(free_csrf, quality="low"), headers=HTMX)
        for _ in range(limit + 1)
    ]
    refused = [a for a in answers if a.status_code == 429]
    assert refused, [a.status_code for a in answers]
    assert re.search(r"(rate limit exceeded|too many active tasks)", refused[-1].text)


async def test_a_post_without_csrf_token_creates_nothing(
    client: httpx.AsyncClient, customer: Customer
) -> None:
    await console_sign_in(client, customer.key)
    before = await _balance(client, customer)
    for data, headers in (
        (_form(""), HTMX),
        ({k: v for k, v in _form("x").items() if k != "csrf_token"}, {}),
        (_form("not-the-token"), {}),
        (_form("x"), {**HTMX, "X-CSRF-Token": "wrong"}),
    ):
        answer = await client.post("/console/playground", data=data, headers=headers)
        assert answer.status_code == 403, answer.text
        assert "invalid or missing CSRF token" in answer.text
    assert await _balance(client, customer) == before
    assert await _task_count(client, customer) == 0


async def test_url_lists_are_one_url_a_line(client: httpx.AsyncClient, customer: Customer) -> None:
    csrf = await console_sign_in(client, customer.key)
    model = "gpt-image-2-image-to-image"
    page = await client.get("/console/playground", params={"model": model})
    assert re.search(r'<textarea id="in-input_urls" name="input_urls"[^>]*required', page.text)
    urls = "\n".join(f"https://203.0.113.{n}/in.png" for n in range(1, 6))
    form = {"csrf_token": csrf, "model": model, "prompt": "make it blue", "input_urls": urls}
    too_many = await client.post("/console/playground/estimate", data=form)
    assert too_many.status_code == 400
    assert "input_urls must have at most 4 items" in too_many.text
    private = await client.post(
        "/console/playground", data={**form, "input_urls": "http://10.0.0.1/in.png\n"}
    )
    assert private.status_code == 400
    assert "input_urls[0] is not allowed" in private.text


# Last in the module: once the module's browser is up, Playwright's sync API keeps an event
# loop running in this thread, where the async tests above could not run.
def test_playground_in_the_browser(browser: Browser, console_server: ConsoleServer) -> None:
    customer = console_server.customer(credits=40)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, console_server.base_url, customer.key, next_path="/console/playground")
    page.wait_for_url("**/console/playground")
    page.set_default_timeout(15_000)
    # Another model swaps in its own form (and the address follows).
    page.select_option("#model-select", "seedance-2.0-text-to-video")
    page.wait_for_selector("#in-generate_audio")
    assert page.url.endswith("?model=seedance-2.0-text-to-video")
    page.select_option("#model-select", MODEL)
    page.wait_for_selector("#in-quality")
    page.fill("#in-prompt", "a red bicycle against a white wall")
    page.wait_for_function(
        "document.querySelector('#estimate #estimate-credits')?.textContent === '4'"
    )
    page.select_option("#in-quality", "high")
    page.wait_for_function(
        "document.querySelector('#estimate #estimate-credits')?.textContent === '8'"
    )
    snap(page, "console-playground")
    assert KEY_TOKEN.search(page.content()) is None
    page.click("#generate")
    image = page.wait_for_selector("#run .task-status[data-state=success] img.result")
    assert image is not None
    page.wait_for_function("document.querySelector('#run img.result').naturalWidth > 0")
    snap(page, "console-playground-result")
    balance = httpx.get(console_server.base_url + "/api/v1/account", headers=customer.headers)
    assert balance.json()["data"]["balance"] == 32
    # The estimate follows the balance after a create.
    page.wait_for_function("document.querySelector('#estimate').textContent.includes('balance 32')")
    # A second create is another task (a fresh request id); one that takes a while shows
    # its stage while it waits (the offline renderer's delay directive).
    first = page.get_attribute("#run .task-status", "id")
    page.fill("#in-prompt", "the same bicycle at night [[delay:1500]]")
    page.click("#generate")
    page.wait_for_function(
        "first => { const s = document.querySelector('#run .task-status');"
        " return s && s.id !== first && s.dataset.state === 'waiting'"
        " && s.querySelector('progress') && s.querySelector('.stage'); }",
        arg=first,
    )
    snap(page, "console-playground-waiting")
    page.wait_for_selector("#run .task-status[data-state=success] img.result")
    assert page.get_attribute("#run .task-status", "id") != first
    balance = httpx.get(console_server.base_url + "/api/v1/account", headers=customer.headers)
    assert balance.json()["data"]["balance"] == 24
    # Not enough credits for a 4K high-quality image: said on the page, nothing charged.
    page.select_option("#in-resolution", "4K")
    page.wait_for_function(
        "document.querySelector('#estimate #estimate-credits')?.textContent === '32'"
    )
    page.click("#generate")
    problem = page.wait_for_selector("#create-problem")
    assert problem is not None and "insufficient credits" in problem.inner_text()
    snap(page, "console-playground-refused")
    context.close()
