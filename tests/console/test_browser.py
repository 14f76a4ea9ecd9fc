"""The console in a real headless Chromium against a real server: signing in and out, every
account page (each saved as a screenshot), keys, the webhook secret, redelivery, CSRF, a
revoked key's session, and no API key in any page source."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Browser, BrowserContext, Page

from tests.conftest import Customer
from tests.support.browser import sign_in, snap
from tests.support.console import ConsoleServer
from tests.support.receiver import receiving
from tests.support.server import wait_until

KEY_TOKEN = re.compile(r"sk_[A-Za-z0-9_-]{20,}")
PAGES = {
    "overview": "/console",
    "keys": "/console/keys",
    "webhooks": "/console/webhooks",
    "ledger": "/console/ledger",
    "connect-mcp": "/console/mcp",
}


def _signed_in(
    browser: Browser, server: ConsoleServer, customer: Customer
) -> tuple[BrowserContext, Page]:
    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of revoke and roll
    sign_in(page, server.base_url, customer.key)
    return context, page


def _account_status(server: ConsoleServer, key: str) -> int:
    """The status of GET /api/v1/account with `key`: 200 while it works, 401 once revoked."""
    answer = httpx.get(
        server.base_url + "/api/v1/account", headers={"Authorization": f"Bearer {key}"}
    )
    return answer.status_code


def test_sign_in_every_page_and_sign_out(browser: Browser, console_server: ConsoleServer) -> None:
    customer = console_server.customer(credits=2500)
    context = browser.new_context()
    page = context.new_page()
    page.goto(console_server.base_url + "/console/ledger")
    assert page.url.endswith("/console/login?next=/console/ledger")
    snap(page, "console-login")
    page.fill("input[name=api_key]", customer.key)
    page.click("form[action='/console/login'] button[type=submit]")
    page.wait_for_url("**/console/ledger")
    for name, path in PAGES.items():
        page.goto(console_server.base_url + path)
        assert page.locator("nav a.active").count() == 1, name
        assert KEY_TOKEN.search(page.content()) is None, name
        snap(page, f"console-{name}")
    page.goto(console_server.base_url + "/console")
    assert page.inner_text("#balance") == "2,500"
    [cookie] = [c for c in context.cookies() if c["name"] == "gengate_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "gengate_console=" not in page.evaluate("document.cookie")
    stored = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert "sk_" not in stored and customer.key not in stored
    page.click("form.signout button")
    page.wait_for_url("**/console/login")
    page.goto(console_server.base_url + "/console/keys")
    assert "/console/login" in page.url
    context.close()


def test_create_copy_and_revoke_a_key(browser: Browser, console_server: ConsoleServer) -> None:
    customer = console_server.customer()
    context, page = _signed_in(browser, console_server, customer)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(console_server.base_url + "/console/keys")
    page.fill("#key-name", "browser key")
    page.uncheck("input[value='keys:manage']")
    page.click("form[action='/console/keys'] button[type=submit]")
    shown = page.inner_text("#new-key", timeout=10_000)
    assert KEY_TOKEN.fullmatch(shown) and shown != customer.key
    assert page.url.endswith("/console/keys")  # htmx: the form posted in place
    page.click("button[data-copy='#new-key']")
    assert page.evaluate("navigator.clipboard.readText()") == shown
    snap(page, "console-keys-created")
    assert _account_status(console_server, shown) == 200
    page.reload()
    assert page.locator("#new-key").count() == 0
    assert shown not in page.content()
    row = page.locator("tr", has_text="browser key")
    assert "tasks:create" in row.inner_text() and "keys:manage" not in row.inner_text()
    row.locator("button", has_text="Revoke").click()
    page.wait_for_url("**/console/keys?revoked=*")
    assert "revoked" in page.locator("tr", has_text="browser key").inner_text()
    snap(page, "console-keys-revoked")
    assert _account_status(console_server, shown) == 401
    context.close()


def test_roll_the_secret_and_redeliver(browser: Browser, console_server: ConsoleServer) -> None:
    customer = console_server.customer()
    api = httpx.Client(base_url=console_server.base_url, headers=customer.headers)
    with receiving() as receiver:
        created = api.post(
            "/api/v1/jobs/createTask",
            json={
                "model": "gpt-image-2-text-to-image",
                "input": {"prompt": "a lighthouse"},
                "callBackUrl": receiver.url + "/hook",
            },
        )
        assert created.status_code == 200, created.text
        wait_until(lambda: len(receiver.on("/hook")) == 1, timeout=30, what="the callback")
        context, page = _signed_in(browser, console_server, customer)
        page.goto(console_server.base_url + "/console/webhooks")
        page.click("#signing-secret summary")
        before = page.inner_text("#webhook-secret")
        assert before.startswith("whsec_")
        page.click("form[action='/console/webhooks/roll'] button")
        page.wait_for_url("**/console/webhooks?rolled=true")
        page.click("#signing-secret summary")
        after = page.inner_text("#webhook-secret")
        assert after.startswith("whsec_") and after != before
        secret = api.get("/api/v1/account/webhook-secret").json()["data"]["secret"]
        assert secret == after
        row = page.locator("#deliveries tr[data-delivery-id]")
        wait_until(lambda: "delivered" in row.first.inner_text(), what="delivered in the page")
        page.click("#deliveries button:has-text('Redeliver')")
        page.wait_for_url("**/console/webhooks?redelivered=*")
        wait_until(lambda: len(receiver.on("/hook")) == 2, timeout=30, what="the redelivery")
        [first, second] = receiver.on("/hook")
    assert first.headers["webhook-id"] != second.headers["webhook-id"]
    page.reload()
    assert page.locator("#deliveries tr[data-delivery-id]").count() == 2
    page.locator("#deliveries details summary").first.click()
    snap(page, "console-webhooks-redelivered")
    api.close()
    context.close()


def test_csrf_refusal_and_a_revoked_keys_session(
    browser: Browser, console_server: ConsoleServer
) -> None:
    customer = console_server.customer()
    context, page = _signed_in(browser, console_server, customer)
    # The session cookie alone (what a cross-site form would carry) changes nothing.
    page.goto(console_server.base_url + "/console/webhooks")
    refused = page.request.post(console_server.base_url + "/console/webhooks/roll")
    assert refused.status == 403
    assert "invalid or missing CSRF token" in refused.text()
    refused = page.request.post(
        console_server.base_url + "/console/keys", form={"name": "x", "scopes": "tasks:read"}
    )
    assert refused.status == 403
    page.goto(console_server.base_url + "/console/keys")
    assert page.locator("#keys tbody tr").count() == 1
    # Revoking the key this session signed in with ends the session.
    page.locator("tr", has_text="this session").locator("button", has_text="Revoke").click()
    page.wait_for_url(re.compile(r".*/console/login\?next=/console/keys"))
    page.goto(console_server.base_url + "/console")
    assert "/console/login" in page.url
    context.close()
