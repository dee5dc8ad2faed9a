"""The web dashboard in a real browser (headless Debian chromium through Playwright), against
a live coordinator with a job rendering: the job page updates as frames land without a
reload, thumbnails decode, and every page is screenshotted: into the test's temporary folder,
or into docs/screenshots/ with `make screenshots` (FRAMEPROOF_SCREENSHOTS=docs/screenshots), so an
ordinary test run leaves the checkout unchanged."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from farm_helpers import submit_sample, wait_for, wait_until_done

from frameproof.localfarm import LocalFarm

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "spinning_cube.blend"
CHROMIUM = os.environ.get("FRAMEPROOF_CHROMIUM") or shutil.which("chromium")

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: `make test` installs Debian's package when run as "
    "root (apt-get install chromium), or set FRAMEPROOF_CHROMIUM to a Chromium binary")


def _http_address(farm: LocalFarm) -> str:
    assert farm.coordinator is not None and farm.coordinator.stdout is not None
    line = farm.coordinator.stdout.readline().decode()
    assert line.startswith("http on "), line
    return line.split()[-1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _shoot(page, name: str, folder: Path) -> None:  # type: ignore[no-untyped-def]
    folder = Path(os.environ.get("FRAMEPROOF_SCREENSHOTS") or folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000, f"{path} is not a screenshot"


def test_dashboard_follows_a_rendering_job(tmp_path: Path) -> None:
    with LocalFarm(tmp_path / "farm", lease_seconds=4.0) as farm:
        farm.start_coordinator(extra_args=("--http", "127.0.0.1:0", "--epoch-seconds", "8"))
        base = f"http://{_http_address(farm)}"
        assert _status(f"{base}/jobs?page=0") == 400
        assert _status(f"{base}/jobs/nosuchjob") == 404
        assert _status(f"{base}/jobs/nosuchjob/frames/1/thumb.png") == 404

        with farm.client() as client, playwright_api.sync_playwright() as p:
            # Queued before any node exists, so the page is open before a frame lands.
            job = submit_sample(client, SAMPLE, "1-6", tier=3)
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 720})

            page.goto(f"{base}/jobs")
            row = page.locator(f"tr.job[data-job='{job.job_id}']")
            assert "queued" in row.locator(".pill").first.inner_text()

            page.goto(f"{base}/jobs/{job.job_id}")
            assert page.locator("figure.frame").count() == 6
            assert page.locator("figure.frame img").count() == 0

            farm.start_node("n1")
            # No reload from here on: the server pushes the page body as frames land.
            page.wait_for_function(
                "document.querySelectorAll('figure.frame img').length >= 1", timeout=180_000)
            wait_until_done(client, job.job_id)
            page.wait_for_function(
                "document.querySelectorAll('figure.frame.approved').length == 6 && "
                "document.querySelectorAll('figure.frame .charge:not(.muted)').length == 6",
                timeout=60_000)
            assert int(page.locator("#live").get_attribute("data-updates") or 0) >= 2
            page.wait_for_function(
                "[...document.querySelectorAll('figure.frame img')].every("
                "i => i.complete && i.naturalWidth > 0)", timeout=30_000)
            widths = page.eval_on_selector_all(
                "figure.frame img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) == 6 and all(w > 0 for w in widths), widths
            captions = page.locator("figure.frame figcaption").all_inner_texts()
            assert all("verified" in c and "$" in c for c in captions), captions
            _shoot(page, "job", tmp_path / "screenshots")

            page.goto(f"{base}/jobs")
            row = page.locator(f"tr.job[data-job='{job.job_id}']")
            page.wait_for_function(
                f"document.querySelector(\"tr.job[data-job='{job.job_id}'] .pill\")"
                ".textContent.trim() == 'done'", timeout=30_000)
            assert "6/6 done" in row.inner_text()
            # A job whose escrow cannot pay for a frame pauses; the open page shows it.
            poor = submit_sample(client, SAMPLE, "1-4", max_cost_usd=0.000001)
            page.wait_for_function(
                f"(document.querySelector(\"tr.job[data-job='{poor.job_id}'] .pill\") || "
                "{textContent: ''}).textContent.trim() == 'paused'", timeout=120_000)
            assert "top up to resume" in page.locator(
                f"tr.job[data-job='{poor.job_id}']").inner_text()
            _shoot(page, "jobs", tmp_path / "screenshots")

            page.goto(f"{base}/nodes")
            assert page.locator("tr.node").count() == 1
            page.locator("tr.node a").first.click()
            page.wait_for_selector("tr.event")
            history = page.locator("table.list").inner_text()
            assert job.job_id not in history  # the public view names no creator's job
            _shoot(page, "node", tmp_path / "screenshots")
            page.goto(f"{base}/nodes")
            _shoot(page, "nodes", tmp_path / "screenshots")

            page.goto(f"{base}/ledger")
            # The epoch closes (8 s) and its mint lands; the ledger check runs in the back.
            page.wait_for_function(
                "document.querySelectorAll('tr.burn').length == 6 && "
                "document.querySelectorAll('tr.mint').length >= 1 && "
                "document.querySelector('#ledger-check').textContent.includes('holds')",
                timeout=120_000)
            _shoot(page, "ledger", tmp_path / "screenshots")
            browser.close()

        wait_for(lambda: farm.coordinator is not None and farm.coordinator.poll() is None, 5)
