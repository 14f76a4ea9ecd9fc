"""The console in a real headless Chromium against a real server: signing in and out, every
account page, keys, the webhook secret, redelivery, CSRF and no key in any page."""

from __future__ import annotations

from playwright.sync_api import Browser

from tests.support.browser import sign_in, snap
from tests.support.console import ConsoleServer


def test_sign_in_and_out(browser: Browser, console_server: ConsoleServer) -> None:
    customer = console_server.customer(credits=2500)
    context = browser.new_context()
    page = context.new_page()
    page.goto(console_server.base_url + "/console")
    assert page.url.endswith("/console/login?next=/console")
    snap(page, "console-login")
    sign_in(page, console_server.base_url, customer.key)
    assert page.inner_text("#balance") == "2,500"
    snap(page, "console-overview")
    [cookie] = [c for c in context.cookies() if c["name"] == "gengate_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find("gengate_console=") == -1
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    page.click("form.signout button")
    page.wait_for_url("**/console/login")
    page.goto(console_server.base_url + "/console")
    assert "/console/login" in page.url
    context.close()
