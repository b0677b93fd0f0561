"""The viewer page in a real headless Chromium (Debian's package, driven by Playwright's client).

A run is captured with the manual API (no AG2 hooks) and left open; the page must show its runs
list and its nested tree, then a new event must appear on the open page through the WebSocket.
Screenshots land in test-artifacts/ (viewer.png, viewer-run.png, viewer-filters.png, viewer-diff.png).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

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


async def _page(browser: Any) -> tuple[Any, list[str]]:
    """A page of the viewer's size, and the list its console and page errors are collected in."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    ARTIFACTS.mkdir(exist_ok=True)
    return page, console_errors


async def _capture_story(url: str, cfg: CaptureConfig, reply: str) -> tuple[str, dict[str, str]]:
    """A planner and an engineer with model calls (cost), a tool, two errors and a file; two stories
    differ only in the engineer's ``reply``. Returns the run id and the ids of notable events."""
    ids: dict[str, str] = {}
    async with capture_run(url, config=cfg, hooks=False, task_description=f"Fit the lensing spectrum ({reply})",
                           mode="one_shot") as run:
        plan = run.capture_agent_call("planner", "Make a plan for the lensing fit")
        run.capture_llm_call("planner", "gpt-4o-mini", 100, 20, cost=0.00010664999999999998, duration_ms=12.0)
        ids["tool"] = run.capture_tool_call("planner", "search_papers", {"query": "zebra-quokka-7731"},
                                            result="1 paper")
        run.capture_agent_response("planner", "plan: fit it", event_id=plan)
        code = run.capture_agent_call("engineer", "Write the fitting code")
        run.capture_llm_call("engineer", "gpt-4o", 900, 300, cost=0.0123, duration_ms=40.0)
        ids["error1"] = run.capture_error("engineer", "ValueError: bad prior", "ValueError")
        run.capture_code_execution("engineer", "fit()", result="chi2=1.02", exit_code=0, duration_ms=25.0)
        run.capture_file_generation("engineer", f"outputs/{reply.split()[0]}.png", "png", 1024)
        ids["error2"] = run.capture_error("engineer", "RuntimeError: did not converge", "RuntimeError")
        run.capture_agent_response("engineer", reply, event_id=code)
        ids["plan"], ids["code"] = plan, code
    return run.run_id, ids


async def test_viewer_finds_things_and_compares_two_runs(browser, sqlite_url) -> None:
    cfg = CaptureConfig(buffer_size=10, flush_interval_ms=20)
    run_a, ids = await _capture_story(sqlite_url, cfg, "converged fine")
    run_b, _ = await _capture_story(sqlite_url, cfg, "diverged badly")
    server = await start_server(sqlite_url, port=0, poll_interval=0.05)
    page, console_errors = await _page(browser)
    try:
        # the run list: cost formatted, searchable, two runs picked and compared
        await page.goto(server.url + "/")
        row_a = page.locator(f'tr[data-run-id="{run_a}"]')
        await row_a.wait_for(timeout=10_000)
        assert "$0.0124" in await row_a.inner_text()  # 0.00010665 + 0.0123, not a raw float
        await page.fill("#runs-q", "DIVERGED")
        await expect(page.locator("#runs tbody tr")).to_have_count(1)
        assert await page.locator(f'tr[data-run-id="{run_b}"]').count() == 1
        await page.fill("#runs-q", "")
        await expect(page.locator("#runs tbody tr")).to_have_count(2)
        assert await page.locator("#compare").is_disabled()
        await page.locator(f'tr[data-run-id="{run_b}"] input[type=checkbox]').check()
        await row_a.locator("input[type=checkbox]").check()
        await page.click("#compare")
        divergence = page.locator("#first-divergence")
        await divergence.wait_for(timeout=10_000)
        assert "engineer" in await page.locator("#diff-verdict").inner_text()
        sides = divergence.locator(".side")
        assert "converged fine" in await sides.nth(0).inner_text()  # A: the earlier run
        assert "diverged badly" in await sides.nth(1).inner_text()
        files = await page.locator("#diff-files").inner_text()
        assert "outputs/converged.png" in files and "outputs/diverged.png" in files
        await page.screenshot(path=str(ARTIFACTS / "viewer-diff.png"), full_page=True)

        # one run: its per-agent cost, then finding things in its tree
        await page.goto(f"{server.url}/#/runs/{run_a}")
        await page.locator("#live-status[data-state='ended']").wait_for(timeout=10_000)
        planner_cost = page.locator('#cost-table tbody tr[data-name="planner"]')
        await planner_cost.wait_for(timeout=10_000)
        assert "$0.000107" in await planner_cost.inner_text()
        assert "$0.0124" in await page.locator("#cost-table tfoot").inner_text()
        assert await page.locator("#tree-axis .tick").count() >= 2  # a real time axis above the rows
        assert (await page.locator("#tree-axis .tick").first.inner_text()) == "0 s"
        await page.locator("#tree li[data-seq='8']").wait_for(timeout=10_000)  # drawn to the last event
        total = await page.locator("#tree li").count()
        assert total == 9
        await page.screenshot(path=str(ARTIFACTS / "viewer-run.png"), full_page=True)

        await planner_cost.click()  # the planner's events highlighted
        await expect(page.locator("#tree li.hl")).to_have_count(3)
        assert {await li.get_attribute("data-id") for li in await page.locator("#tree li.hl").all()} >= {
            ids["plan"], ids["tool"]}
        await planner_cost.click()
        await expect(page.locator("#tree li.hl")).to_have_count(0)

        visible_rows = page.locator("#tree .row:visible")
        await page.select_option("#f-agent", "engineer")
        await expect(page.locator("#tree li.f-hit")).to_have_count(6)
        await expect(visible_rows).to_have_count(6)  # the engineer's call holds the rest: no context rows
        await page.select_option("#f-type", "error")
        await expect(page.locator("#tree li.f-hit")).to_have_count(2)
        await expect(visible_rows).to_have_count(3)  # the two errors and their parent call, dimmed
        assert "2 of 9" in await page.locator("#f-count").inner_text()
        await page.select_option("#f-agent", "")
        await page.select_option("#f-type", "")
        await expect(visible_rows).to_have_count(total)

        await page.fill("#f-text", "zebra-quokka")  # only in the tool call's arguments
        hits = page.locator("#tree li.f-hit")
        await expect(hits).to_have_count(1)
        assert await hits.get_attribute("data-id") == ids["tool"]
        await page.screenshot(path=str(ARTIFACTS / "viewer-filters.png"), full_page=True)
        await page.fill("#f-text", "")
        await expect(visible_rows).to_have_count(total)

        current = page.locator("#tree li.current-error")
        await page.click("#collapse-all")
        await expect(visible_rows).to_have_count(2)  # the two top-level calls
        for expected in (ids["error1"], ids["error2"], ids["error1"]):  # cycles
            await page.click("#next-error")
            await expect(current).to_have_count(1)
            assert await current.get_attribute("data-id") == expected
            await expect(current.locator(":scope > .row")).to_be_in_viewport()
            assert expected in await page.locator("#detail").inner_text()
        await page.click("#expand-all")
        await expect(visible_rows).to_have_count(total)
        await page.click("#collapse-all")
        await expect(visible_rows).to_have_count(2)
        await page.click("#expand-all")
        await expect(visible_rows).to_have_count(total)
        assert not console_errors, console_errors
    finally:
        await page.close()
        await server.close()


def _fit(lmax: int) -> None:
    raise ValueError(f"ell out of range: {lmax}")


async def test_viewer_shows_a_model_calls_conversation_and_an_errors_traceback(browser, sqlite_url) -> None:
    cfg = CaptureConfig(buffer_size=10, flush_interval_ms=20)
    long_plan = "Plan: " + "derive the lensing potential, " * 40
    messages = [{"role": "system", "content": "You are a careful cosmologist."},
                {"role": "user", "content": long_plan, "name": "planner"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "camb", "arguments": '{"lmax": 2500}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "C_ell computed"}]
    response = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "The fit converged: chi2 = 1.02"}}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129}}
    async with capture_run(sqlite_url, config=cfg, hooks=False, task_description="lensing fit") as run:
        call = run.capture_agent_call("engineer", "fit it")
        llm = run.capture_llm_call("engineer", "gpt-4o", 120, 9, cost=0.0004, duration_ms=20.0,
                                   request={"model": "gpt-4o", "messages": messages, "temperature": 0.0},
                                   response=response, cost_source="reported")
        try:
            _fit(5000)
        except ValueError as exc:
            error = run.capture_exception("engineer", exc, "tool")
        run.capture_agent_response("engineer", "done", event_id=call)
    server = await start_server(sqlite_url, port=0, poll_interval=0.05)
    page, console_errors = await _page(browser)
    try:
        await page.goto(f"{server.url}/#/runs/{run.run_id}")
        await page.locator("#live-status[data-state='ended']").wait_for(timeout=10_000)
        await page.locator(f'#tree li[data-id="{llm}"] > .row').click()
        conversation = page.locator("#detail .llm")
        await conversation.wait_for(timeout=10_000)
        await expect(conversation.locator(".chat-msg")).to_have_count(5)  # four sent, one completion
        roles = [await r.inner_text() for r in await conversation.locator(".chat-role").all()]
        assert roles[:4] == ["system", "user · planner", "assistant", "tool · answers call_1"]
        assert "camb" in await conversation.locator("pre.tool-call").first.inner_text()
        long = conversation.locator(".chat-msg details")
        await expect(long).to_have_count(1)  # the long plan collapsed
        assert not await long.locator("pre").is_visible()
        assert "chi2 = 1.02" in await conversation.inner_text()
        assert "(reported)" in await conversation.inner_text() and "replayable" in await conversation.inner_text()
        await page.screenshot(path=str(ARTIFACTS / "viewer-llm-call.png"), full_page=True)

        await page.locator(f'#tree li[data-id="{error}"] > .row').click()
        trace = page.locator("#detail pre.traceback")
        await trace.wait_for(timeout=10_000)
        text = await trace.inner_text()
        assert "_fit" in text and "ell out of range: 5000" in text and "test_viewer_browser.py" in text
        await page.screenshot(path=str(ARTIFACTS / "viewer-traceback.png"), full_page=True)
        assert not console_errors, console_errors
    finally:
        await page.close()
        await server.close()
