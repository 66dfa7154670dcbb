"""The queue page's job view shows a job's after edges (issue 13): a link to each job it waits
for, read from its card; a card whose edges are out of range is refused like any bad card."""
from __future__ import annotations

import json
import time

import pytest

from dpu_slurm.index import CARD_VERSION, BadCard, Card
from tests.conftest import Session
from tests.test_web import get_json, http, serving, wait_until


def test_the_job_page_links_the_jobs_it_waits_for(session: Session) -> None:
    jobs = session.dpu.run_target("HotPixels", i="WFI", d="2000-04-28", c="ccd52")
    bias, hot = jobs["Bias"], jobs["HotPixels"]
    assert bias and hot
    session.dpu.wait([bias, hot], timeout=90, interval=0.05)
    with serving() as (url, _):
        def both() -> bool:
            return {bias, hot} <= {j["jobid"] for j in get_json(url + "/api/queue")["jobs"]}
        wait_until(both)
        rows = {j["jobid"]: j for j in get_json(url + "/api/queue")["jobs"]}
        detail = get_json(url + "/api" + rows[hot]["url"])
        html = http(url + rows[hot]["url"])[2].decode()
        first = get_json(url + "/api" + rows[bias]["url"])
    # one CCD: process 0 reads process 0, so the edge pairs them
    assert detail["job"]["after"] == [{"jobid": bias, "url": rows[bias]["url"], "mode": "each"}]
    assert f'<a href="{rows[bias]["url"]}">job {bias}</a> (each)' in html
    assert first["job"]["after"] == []


def card(**extra: object) -> bytes:
    now = time.time()
    return json.dumps({"v": CARD_VERSION, "user": "nobody", "store": "feedbeef", "job_id": 7,
                       "dpu": "testlocal", "sequence": "Bias", "options": {}, "nproc": 1, "ntasks": 1,
                       "created": now, "submitted": now, "jobdir": "/w/jobs/7.feedbeef",
                       "native_ids": ["1"], "chunk": 1, "time_limit": 60, **extra}).encode()


@pytest.mark.parametrize("after", [{"jobs": ["<b>"], "mode": "ok"}, {"jobs": [3], "mode": "all"},
                                   {"jobs": [], "mode": "ok"}, {"jobs": list(range(1, 200)), "mode": "ok"},
                                   {"jobs": [3], "mode": "ok", "x": 1}, [3]])
def test_a_card_with_bad_edges_is_refused(after: object) -> None:
    with pytest.raises(BadCard, match="after"):
        Card.parse(card(after=after))


def test_a_card_with_edges_or_without_is_read() -> None:
    assert Card.parse(card(after={"jobs": [3, 4], "mode": "each"})).after == {"jobs": [3, 4], "mode": "each"}
    assert Card.parse(card()).after == {}
    assert "after" not in json.loads(Card.parse(card()).dump())   # older pages still read it
