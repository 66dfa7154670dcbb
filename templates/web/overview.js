// The overview refreshes itself from /api/dpus. Every text goes in through textContent, never as
// HTML; links are the server's own /dpu/NAME/ paths.
"use strict";
(function () {
  const { ago, cell } = window.dpuPage;  // common.js
  const body = document.querySelector("#dpus tbody");
  const letters = ["N", "E", "A", "S", "U"];
  const period = Math.max(1, Number(document.body.dataset.refresh) || 5) * 1000;
  function dpuRow(d) {
    const tr = document.createElement("tr");
    tr.dataset.dpu = d.dpu;
    tr.className = d.reachable === false ? "unreachable" : d.stale ? "stale" : d.reachable ? "ok" : "waiting";
    const name = cell(tr, "", "dpu");
    const link = document.createElement("a");
    link.href = d.url;
    link.textContent = d.dpu;
    name.appendChild(link);
    const about = document.createElement("div");
    about.className = "options";
    about.textContent = d.description;
    name.appendChild(about);
    cell(tr, d.scheduler, "scheduler");
    cell(tr, d.health, "health");
    cell(tr, ago(d.age), "age");
    cell(tr, `${d.jobs} (${d.statuses.QUEUED} queued, ${d.statuses.RUNNING} running)`, "jobs");
    cell(tr, String(d.queued), "count queued");
    cell(tr, String(d.running), "count running");
    for (const letter of letters) {
      const n = d.counters[letter];
      cell(tr, String(n), "count " + letter + (n && letter !== "N" ? " bad" : ""));
    }
    return tr;
  }
  async function load() {
    try {
      const answer = await fetch("/api/dpus", {cache: "no-store", headers: {Accept: "application/json"}});
      if (!answer.ok) return;
      const data = await answer.json();
      body.replaceChildren(...data.dpus.map(dpuRow));
      document.body.dataset.loaded = String(Date.now());
    } catch (err) {
      // keep the last rows; the next refresh tries again
    }
  }
  setInterval(load, period);
  load();
})();
