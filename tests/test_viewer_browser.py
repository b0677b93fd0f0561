"""The viewer page in a real headless Chromium (Debian's package, driven by Playwright's client).

A run is captured with the manual API (no AG2 hooks) and left open; the page must show its runs
list and its nested tree, then a new event must appear on the open page through the WebSocket.
The screenshot lands in test-artifacts/viewer.png.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cmbagent_events import CaptureConfig, capture_run
from cmbagent_events.live.server import start_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium absent: apt-get install chromium (.ci/run does)")


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


async def test_viewer_shows_the_tree_and_a_live_event(browser, sqlite_url) -> None:
    cfg = CaptureConfig(buffer_size=10, flush_interval_ms=20)
    server = await start_server(sqlite_url, port=0, poll_interval=0.05)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    try:
        async with capture_run(sqlite_url, config=cfg, hooks=False, task_description="Plot the CMB power spectrum",
                               mode="planning_and_control") as run:
            plan = run.capture_agent_call("planner", "Make a plan for the CMB spectrum plot")
            run.capture_tool_call("planner", "search_papers", {"query": "Planck 2018 TT"}, result="3 papers")
            run.capture_message("planner", "engineer", "Please write the plotting code")
            relayed = {"content": "Please write the plotting code"}
            for member in ("engineer", "reviewer", "critic", "archivist"):  # a manager's broadcast, folded
                run.capture_relay("manager", member, relayed["content"], message=relayed)
            run.capture_handoff("planner", "engineer", reason="plan ready")
            code = run.capture_agent_call("engineer", "Write and run the plotting code")
            run.capture_code_execution("engineer", "import matplotlib\nplot()", result="saved plot.png", exit_code=0,
                                       duration_ms=42.0)
            run.capture_file_generation("engineer", "outputs/cmb_tt.png", "png", 48213)
            run.capture_error("engineer", "FileNotFoundError: data/planck.fits", "FileNotFoundError")
            run.capture_agent_response("engineer", "Plot written to outputs/cmb_tt.png", event_id=code)
            assert await run.flush()

            # the runs list
            await page.goto(server.url + "/")
            row = page.locator(f'tr[data-run-id="{run.run_id}"]')
            await row.wait_for(timeout=10_000)
            assert "running" in await row.inner_text()
            assert "Plot the CMB power spectrum" in await row.inner_text()

            # the run: nested tree
            await row.click()
            tree = page.locator("#tree")
            await page.locator("#tree li[data-seq='8']").wait_for(timeout=10_000)
            assert await page.locator("#live-status").get_attribute("data-state") == "live"
            top = page.locator("#tree > li")
            assert await top.count() == 1  # everything is under the planner's call
            planner = page.locator(f'#tree > li[data-id="{plan}"]')
            for kind, count in (("tool_call", 1), ("message", 2), ("handoff", 1), ("agent_call", 1)):
                assert await planner.locator(f':scope > ul > li[data-type="{kind}"]').count() == count, kind
            engineer = planner.locator(f':scope > ul > li[data-id="{code}"]')
            kinds = [await li.get_attribute("data-type") for li in await engineer.locator(":scope > ul > li").all()]
            assert kinds == ["code_exec", "file_gen", "error"]
            text = await tree.inner_text()
            assert "search_papers" in text and "outputs/cmb_tt.png" in text and "FileNotFoundError" in text
            assert "manager → engineer, reviewer, critic +1 [broadcast to 4]" in text
            assert "Plot written to outputs/cmb_tt.png" in text  # the completed call's response
            assert await page.locator("#timeline .mark").count() == 9

            # details of one event
            await engineer.locator(":scope > ul > li[data-type='error'] > .row").click()
            assert "data/planck.fits" in await page.locator("#detail").inner_text()

            # a live event reaches the open page
            run.capture_message("engineer", "planner", "LIVE: the plot is ready for review")
            assert await run.flush()
            live = page.locator("#tree li[data-seq='9']")
            await live.wait_for(timeout=10_000)
            assert "LIVE: the plot is ready" in await live.inner_text()
            await asyncio.sleep(0.3)  # let the fresh-row highlight and the timeline settle
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
            run.capture_agent_response("planner", "Done: plot delivered", event_id=plan)

        # the run ends: the page says so and shows the completion of the planner's call
        await page.locator("#live-status[data-state='ended']").wait_for(timeout=10_000)
        assert "Done: plot delivered" in await planner.locator(":scope > .row").inner_text()
        assert "completed" in await page.locator("#run-title").inner_text()
        assert not console_errors, console_errors
    finally:
        await page.close()
        await server.close()
