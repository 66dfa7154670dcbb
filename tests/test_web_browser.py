"""The queue page in a real headless Chromium (Debian's, installed by harness/chromium-up.sh),
against live servers with jobs on the local DPU and on the real SLURM (harness/slurm-up.sh).

Saves test-artifacts/queue.png and queue-slurm.png for a person to look at;
DPU_DOCS_SCREENSHOT=1 also refreshes docs/queue.png for the README.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, List

import pytest
from playwright.sync_api import Browser, Page, expect

from dpu_slurm.session import store_id
from tests.conftest import REPO, Env, Session
from tests.test_web import HOSTILE, finished, get_json, other_users_job, serving

pytestmark = pytest.mark.chromium
ARTIFACTS = REPO / "test-artifacts"
ME = pwd.getpwuid(os.getuid()).pw_name


def open_queue(page: Page, url: str) -> None:
    page.goto(url + "/")
    # the first refresh from /api/queue ran (no wait_for_function: the page's CSP forbids eval)
    expect(page.locator("body")).to_have_attribute("data-loaded", re.compile(r"^\d+$"))
    page.evaluate("window.__samePage = true")


def row(page: Page, key: str) -> Any:
    return page.locator(f'#queue tbody tr[data-key="{key}"]')


def counters(page: Page, key: str) -> List[str]:
    return row(page, key).locator("td.count").all_inner_texts()


def shown_statuses(page: Page) -> List[str]:
    return page.locator("#queue tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_local_dpu_queue_page(session: Session, env: Env, page: Page) -> None:
    store = store_id(session.dpu._store)
    ok = finished(session, "ReadNoise", i="WFI", d="2000-04-28", C=1)
    bad = finished(session, "Null>Null", x=True, m="fails on purpose")
    hostile = finished(session, "Null", m=HOSTILE)
    long = session.dpu.run("Null", s=60, m="runs a minute", return_jobid=True)
    soon = session.dpu.run("Null", s=4, n=2, m="ends in 4 s", return_jobid=True)
    other_users_job(env, letters="NE")
    key = {jid: f"{ME}/{jid}.{store}" for jid in (ok, bad, hostile, long, soon)}
    with serving(refresh=1.0) as (url, _):
        open_queue(page, url)
        # the right counters, for this user's jobs and another user's
        assert counters(page, key[ok]) == ["8", "0", "0", "0", "0"]
        assert counters(page, key[bad]) == ["0", "1", "0", "1", "0"]
        assert counters(page, "nobody/7.feedbeef") == ["1", "1", "0", "0", "0"]
        expect(row(page, key[bad])).to_have_class("status-finished failed")
        expect(row(page, "nobody/7.feedbeef").locator("td.user")).to_have_text("nobody")
        expect(row(page, key[long]).locator("td.status")).to_have_text("RUNNING")

        # the refresh shows the job that finished, without reloading the page
        expect(row(page, key[soon])).to_have_attribute("data-status", "FINISHED", timeout=30_000)
        assert counters(page, key[soon]) == ["2", "0", "0", "0", "0"]
        assert page.evaluate("window.__samePage") is True, "the page was reloaded"
        assert row(page, key[soon]).locator("td.runtime").inner_text().startswith("00:00:0")

        # a hostile job text is shown as text and runs nothing
        options = row(page, key[hostile]).locator(".options")
        expect(options).to_contain_text('message=<script>window.__pwned=1</script><img src=x onerror=')
        assert page.locator("#queue img, #queue tbody script").count() == 0
        assert page.evaluate("window.__pwned") is None

        # the status filter, applied by the server and kept in the address
        page.select_option("#status", "FINISHED")
        expect(page.locator('#queue tbody tr[data-status="RUNNING"]')).to_have_count(0)
        assert set(shown_statuses(page)) == {"FINISHED"} and len(shown_statuses(page)) == 5
        assert page.url.endswith("?status=FINISHED")
        page.select_option("#status", "RUNNING")
        expect(page.locator("#queue tbody tr")).to_have_count(1)
        expect(row(page, key[long])).to_be_visible()
        page.select_option("#status", "")
        page.select_option("#user", "nobody")
        expect(page.locator("#queue tbody tr")).to_have_count(1)
        page.select_option("#user", "")
        expect(page.locator("#queue tbody tr")).to_have_count(6)
        assert page.evaluate("window.__samePage") is True
        shot = screenshot(page, "queue.png")
        if os.environ.get("DPU_DOCS_SCREENSHOT") == "1":
            shutil.copy(shot, REPO / "docs" / "queue.png")

        # the job page: its logs, and the same text inert there too
        page.click(f'#queue tbody tr[data-key="{key[hostile]}"] td.jobid a')
        expect(page.locator("h1")).to_have_text(f"Job {hostile} of {ME}")
        expect(page.locator("#options")).to_contain_text("<script>window.__pwned=1</script>")
        expect(page.locator("section.log pre")).to_contain_text("Message: <script>window.__pwned=1")
        assert page.locator("img").count() == 0 and page.evaluate("window.__pwned") is None
    session.dpu.cancel_job(long, force=True)


def test_server_rendered_page_is_inert_without_javascript(session: Session, browser: Browser) -> None:
    hostile = finished(session, "Null", m=HOSTILE)
    context = browser.new_context(java_script_enabled=False)
    tab = context.new_page()
    with serving() as (url, _):
        tab.goto(url + "/")
        expect(tab.locator("#queue tbody tr")).to_have_count(1)
        expect(tab.locator("td.jobid")).to_have_text(str(hostile))
        expect(tab.locator(".options")).to_contain_text("<img src=x onerror=")
        assert tab.locator("#queue img").count() == 0
        tab.select_option("#status", "RUNNING")     # without script the form is a plain GET
        tab.click("#filters button[type=submit]")
        tab.wait_for_url("**/?user=&status=RUNNING")
        expect(tab.locator("#queue tbody tr")).to_have_count(0)
    context.close()


# -- SLURM ----------------------------------------------------------------------------------
def sbatch_as(user: str, name: str, seconds: int) -> str:
    """A job of another OS user, submitted by that user (the page must see it in squeue)."""
    out = subprocess.run(["runuser", "-u", user, "--", "sbatch", "--parsable", "--array=0-0",
                          "--chdir=/tmp", "-o", "/dev/null", "-J", name, "--mem=10", "--time=5",
                          "--wrap", f"sleep {seconds}"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def other_users_slurm_card(env: Env, native: str) -> None:
    folder = env.work / "webslurm" / "index" / "nobody"
    folder.mkdir(parents=True)
    now = time.time()
    card = {"v": 1, "user": "nobody", "store": "0ddba11", "job_id": 3, "dpu": "webslurm",
            "sequence": "Reduce", "options": {"date": "2000-04-29"}, "nproc": 1, "ntasks": 1,
            "created": now, "submitted": now, "jobdir": str(env.work / "nobody-jobs" / "3.0ddba11"),
            "native_ids": [native], "chunk": 400, "time_limit": 300}
    (folder / "3.0ddba11.json").write_text(json.dumps(card))
    uid = pwd.getpwnam("nobody").pw_uid
    # The page believes a card only when its job folder is the card owner's.
    Path(card["jobdir"]).mkdir(parents=True)
    os.chown(card["jobdir"], uid, -1)
    os.chown(folder, uid, -1)
    os.chown(folder / "3.0ddba11.json", uid, -1)


@pytest.mark.slurm
def test_slurm_dpu_queue_page(make_session: Any, env: Env, slurm_cluster: None, page: Page) -> None:
    slurm_dpu = "webslurm"
    session = make_session(slurm_dpu, scheduler="slurm", workdir=str(env.work / "webslurm"),
                           time_factor=1, min_time=60, max_array_size=400,
                           # a long grace: no sacct fallback, so the other user's job can only
                           # be seen through an all-users squeue
                           poll={"min_interval": 0, "max_interval": 0, "grace": 600},
                           partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    store = store_id(session.dpu._store)
    theirs = sbatch_as("nobody", "dpu.nobody.3", 120)
    try:
        other_users_slurm_card(env, theirs)
        ok = finished(session, "Null", n=2, dpu_mem=50)
        bad = finished(session, "Null>Null", x=True, dpu_mem=50)
        soon = session.dpu.run("Null", s=5, dpu_mem=50, return_jobid=True)
        key = {jid: f"{ME}/{jid}.{store}" for jid in (ok, bad, soon)}
        with serving(slurm_dpu, refresh=1.0) as (url, _):
            open_queue(page, url)
            assert counters(page, key[ok]) == ["2", "0", "0", "0", "0"]
            assert counters(page, key[bad]) == ["0", "1", "0", "1", "0"]
            # another user's job, seen in squeue (all users): running, not "queued" or "unknown"
            other = row(page, "nobody/3.0ddba11")
            expect(other.locator("td.status")).to_have_text("RUNNING", timeout=30_000)
            expect(other.locator("td.user")).to_have_text("nobody")
            expect(row(page, key[soon])).to_have_attribute("data-status", "FINISHED", timeout=60_000)
            assert counters(page, key[soon]) == ["1", "0", "0", "0", "0"]
            page.select_option("#status", "RUNNING")
            expect(page.locator("#queue tbody tr")).to_have_count(1)
            expect(other).to_be_visible()
            page.select_option("#status", "")
            assert page.evaluate("window.__samePage") is True
            assert get_json(url + "/api/queue?user=nobody")["jobs"][0]["running"] == 1
            screenshot(page, "queue-slurm.png")
    finally:
        subprocess.run(["scancel", theirs], check=False)
