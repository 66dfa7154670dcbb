"""The "Cluster Queues" overview in a real headless Chromium: local, SLURM, Grid Engine and an SSH
DPU that cannot be reached (127.0.0.1, a closed port), each with its row; a DPU's page from it.

Saves test-artifacts/overview.png for a person to look at.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import SGE_ENV, Env
from tests.test_web import finished
from tests.test_web_browser import screenshot
from tests.test_web_hub import closed_port, hub, polled

pytestmark = [pytest.mark.chromium, pytest.mark.slurm, pytest.mark.sge]


def test_every_dpu_on_one_page_in_chromium(make_session: Any, env: Env, slurm_cluster: None,
                                           sge_cluster: None, page: Page,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    known = env.root / "known_hosts"
    known.write_text("")
    env.write_dpu("far", scheduler="slurm", description="login node switched off",
                  host={"hostname": "127.0.0.1", "port": closed_port(), "user": "dpuuser",
                        "known_hosts": str(known), "connect_timeout": 2})
    slurm = make_session("hubslurm", scheduler="slurm", min_time=60,
                         poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                         partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    sge = make_session("hubsge", scheduler="sge", min_time=60,
                       poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    local = make_session()
    ok = finished(local, "Null", n=2)
    finished(slurm, "Null", dpu_mem=50)
    finished(sge, "Null>Null", x=True)
    names = ("far", "hubsge", "hubslurm", "testlocal")
    with hub(*names) as (url, server):
        page.goto(url + "/")
        expect(page.locator("body")).to_have_attribute("data-loaded", re.compile(r"^\d+$"))
        rows = page.locator("#dpus tbody tr")
        expect(rows).to_have_count(4)
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.dpu)") == list(names)

        def row(name: str) -> Any:
            return page.locator(f'#dpus tbody tr[data-dpu="{name}"]')

        for name in ("hubsge", "hubslurm", "testlocal"):   # refreshed in place from /api/dpus
            expect(row(name)).to_have_class("ok", timeout=30_000)
        expect(row("far")).to_have_class("unreachable", timeout=60_000)
        expect(row("far").locator("td.health")).to_contain_text("unreachable")
        expect(row("testlocal").locator("td.count.N")).to_have_text("2")
        expect(row("hubslurm").locator("td.count.N")).to_have_text("1")
        expect(row("hubsge").locator("td.count.E")).to_have_text("1")
        expect(row("hubsge").locator("td.count.S")).to_have_text("1")
        assert polled(server, "far") > 0
        screenshot(page, "overview.png")
        row("testlocal").locator("td.dpu a").click()         # the DPU's own queue page
        expect(page).to_have_url(url + "/dpu/testlocal/")
        expect(page.locator("body")).to_have_attribute("data-loaded", re.compile(r"^\d+$"))
        expect(page.locator("#queue tbody tr")).to_have_count(1)
        expect(page.locator("#queue tbody tr td.jobid a")).to_have_text(str(ok))
        page.locator("#queue tbody tr td.jobid a").click()
        expect(page).to_have_url(re.compile(re.escape(url) + r"/dpu/testlocal/job/"))
