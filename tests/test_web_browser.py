"""A real browser (Debian's Chromium, driven by Playwright) against `monitor serve` on loopback.

A supervisor logs in, a sample call is streamed live into the server, the
forbidden-phrase alert appears on the dashboard, the supervisor acknowledges
it and opens the call with the violation highlighted. An agent logs in and
cannot open another agent's call. An agent appeals a deduction, a qa reviewer
overturns it from the queue, and the agent sees the new score and the note. Every page runs under the app's
Content-Security-Policy, and the browser must report no violation of it.
Screenshots go to ``MONITOR_SCREENSHOTS`` (a temporary directory when unset).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from web_helpers import PASSWORD, SAMPLES, LiveServer, scored_db_copy, stream_call

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (.ci/run installs it)")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def server(transcriber, tmp_path_factory):
    from monitor.store import open_store
    from monitor.web import auth
    from monitor.web.app import create_app

    url = scored_db_copy(transcriber, tmp_path_factory.mktemp("browser"))
    token = auth.issue_api_token(open_store(url), "sup")
    with LiveServer(create_app(url, transcriber=transcriber)) as live:
        live.token = token
        yield live


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    directory = Path(os.environ.get("MONITOR_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def csp_violations(page) -> list[str]:
    """Chromium's console errors about the Content-Security-Policy on ``page``, as they come."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def log_in(page, base: str, name: str) -> None:
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def test_supervisor_sees_live_alert_and_opens_the_call(server, browser, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    page = context.new_page()
    violations = csp_violations(page)
    log_in(page, server.url, "sup")
    page.wait_for_url("**/dashboard")
    page.wait_for_selector("#status.on", timeout=10_000)

    streamed: list = []
    feeder = threading.Thread(target=lambda: streamed.extend(stream_call(
        server.port, server.token, str(SAMPLES / "d02_fault_rude.wav"), "live-d02", "A1002", "broadband", time_scale=3.0)))
    feeder.start()
    page.wait_for_selector(".live-call[data-call-id^=live-]", timeout=30_000)
    alert = page.wait_for_selector(".alert:has(a:text('live-'))", timeout=60_000)
    page.wait_for_timeout(600)
    page.screenshot(path=str(shots / "1-dashboard-live-alert.png"))
    assert "不归我管" in alert.inner_text() or "怎么又问" in alert.inner_text()

    alert.query_selector("button.ack").click()
    page.wait_for_selector(".alert.acked:has(a:text('live-'))", timeout=5_000)
    feeder.join(120)
    assert not feeder.is_alive() and any("alert" in m for m in streamed)
    page.wait_for_selector(".live-call[data-call-id^=live-]", state="detached", timeout=30_000)

    page.click(".alert a:text('live-')")
    page.wait_for_url("**/calls/live-*")
    mark = page.wait_for_selector("mark.major, mark.critical", timeout=10_000)
    # The heard words are marked (ASR may hear 又问 as 又闻); the mark names the forbidden phrase.
    assert mark.is_visible() and "禁语" in mark.get_attribute("title") and mark.inner_text().startswith("刚才不是")
    page.screenshot(path=str(shots / "2-call-report.png"), full_page=True)
    # The report's own script runs under the page's nonce: a timestamp seeks the recording's player.
    page.goto(server.url + "/calls/d02_fault_rude")
    seek = page.locator("[data-t]").last
    page.evaluate("document.getElementById('player').muted = true")
    seek.click()
    assert page.evaluate("document.getElementById('player').currentTime") >= float(seek.get_attribute("data-t")) - 0.5 > 0

    page.goto(server.url + "/calls")
    assert page.locator("table a:text('d09_service_condescending')").count() == 1
    page.screenshot(path=str(shots / "3-call-browser.png"))
    assert violations == []
    context.close()


def test_agent_sees_own_portal_but_not_another_agents_call(server, browser, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    page = context.new_page()
    violations = csp_violations(page)
    log_in(page, server.url, "alice")
    page.wait_for_url("**/me")
    assert page.locator("svg.trend circle").count() >= 2
    page.screenshot(path=str(shots / "4-agent-portal.png"), full_page=True)

    response = page.goto(server.url + "/calls/d09_service_condescending")
    assert response.status == 404
    assert "d09_service_condescending" not in page.content().split("<main>")[1]
    page.screenshot(path=str(shots / "5-agent-forbidden.png"))
    assert page.goto(server.url + "/calls/d09_service_condescending/audio").status == 404
    assert page.goto(server.url + "/dashboard").status == 403
    assert "没有权限" in page.content()
    assert violations == []
    context.close()


def test_agent_appeals_reviewer_overturns_agent_sees_new_score(server, browser, shots):
    agent = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")  # a phone
    page = agent.new_page()
    violations = csp_violations(page)
    log_in(page, server.url, "alice")
    page.wait_for_url("**/me")
    page.goto(server.url + "/calls/d02_fault_rude#review")
    machine = int(page.locator(".head .score .value").inner_text())
    row = page.locator("#review tr:has(button.time):has(form.appeal)").first
    points = int(row.locator("td.points").inner_text().lstrip("−-"))
    row.locator("input[name=reason]").fill("这句话是客户说的，不是我")
    page.screenshot(path=str(shots / "6-agent-appeal-form.png"), full_page=False)
    row.locator("button.primary").click()
    page.wait_for_selector("#review .tag:text('待复核')")
    page.screenshot(path=str(shots / "7-agent-appeal-filed.png"))

    reviewer = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    review = reviewer.new_page()
    review_violations = csp_violations(review)
    log_in(review, server.url, "quinn")
    review.wait_for_url("**/dashboard")
    review.goto(server.url + "/reviews")
    item = review.locator(".appeal-item:has-text('d02_fault_rude')")
    assert "这句话是客户说的" in item.inner_text()
    assert "#t=" in item.locator("audio").get_attribute("src")  # the player starts at the event
    review.screenshot(path=str(shots / "8-review-queue.png"), full_page=True)
    item.locator("input[name=note]").fill("复听录音：是客户的话，撤销")
    item.locator("button[value=overturned]").click()
    review.wait_for_url("**/reviews")
    assert review.locator(".appeal-item:has-text('d02_fault_rude')").count() == 0
    assert "复听录音：是客户的话，撤销" in review.locator("table").last.inner_text()
    review.goto(server.url + "/rules")
    review.screenshot(path=str(shots / "9-rule-health.png"), full_page=True)

    page.reload()  # the same URL: goto would only scroll to #review
    assert int(page.locator(".head .score .value").inner_text()) == min(100, machine + points)
    panel = page.locator("#review").inner_text()
    assert "复听录音：是客户的话，撤销" in panel and f"复核后 {min(100, machine + points)} 分" in panel
    assert f"机器评分 {machine} 分" in panel
    page.screenshot(path=str(shots / "10-agent-sees-review.png"), full_page=False)
    assert violations == [] and review_violations == []
    agent.close()
    reviewer.close()
