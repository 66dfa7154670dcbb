// The queue page refreshes itself from /api/queue without reloading. Every job text goes in
// through textContent, never as HTML, so a job's options cannot become markup or script.
"use strict";
(function () {
  const { ago, cell } = window.dpuPage;  // common.js
  const body = document.querySelector("#queue tbody");
  const form = document.getElementById("filters");
  const userSelect = document.getElementById("user");
  const statusSelect = document.getElementById("status");
  const warning = document.getElementById("warning");
  const letters = ["N", "E", "A", "S", "U"];
  const base = document.body.dataset.base || "";  // "" or /dpu/NAME (several DPUs on one server)
  const period = Math.max(1, Number(document.body.dataset.refresh) || 5) * 1000;
  let busy = false;
  let again = false;  // a filter changed while a refresh was on its way: load once more

  const pad = (n) => String(n).padStart(2, "0");
  function when(t) {
    if (t === null || t === undefined) return "";
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.floor(s);
    const days = Math.floor(s / 86400);
    s %= 86400;
    const text = `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
    return days ? `${days}d ${text}` : text;
  }
  function jobRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.key = job.key;
    tr.dataset.status = job.status;
    tr.className = "status-" + job.status.toLowerCase() + (job.status === "FINISHED" && !job.ok ? " failed" : "");
    const link = document.createElement("a");
    link.href = job.url;  // built by the server from the job's key, always under /job/
    link.textContent = String(job.jobid);
    cell(tr, "", "jobid").appendChild(link);
    cell(tr, job.user, "user");
    const seq = cell(tr, job.sequence, "sequence");
    const opts = document.createElement("div");
    opts.className = "options";
    opts.textContent = job.summary;
    seq.appendChild(opts);
    cell(tr, job.status, "status");
    for (const letter of letters) {
      const n = job.counters[letter];
      cell(tr, String(n), "count " + letter + (n && letter !== "N" ? " bad" : ""));
    }
    cell(tr, when(job.submitted), "submitted");
    cell(tr, duration(job.running_time), "runtime");
    return tr;
  }
  function setUsers(users, chosen) {
    const keep = new Set(users);
    if (chosen) keep.add(chosen);
    const have = Array.from(userSelect.options).slice(1).map((o) => o.value);
    if (have.join("\n") === Array.from(keep).sort().join("\n")) return;
    while (userSelect.options.length > 1) userSelect.remove(1);
    for (const u of Array.from(keep).sort()) {
      const option = document.createElement("option");
      option.value = u;
      option.textContent = u;
      userSelect.appendChild(option);
    }
    userSelect.value = chosen;
  }
  function render(data) {
    body.replaceChildren(...data.jobs.map(jobRow));
    setUsers(data.users, userSelect.value);
    document.getElementById("updated").textContent = when(data.updated);
    document.getElementById("age").textContent = ago(data.age);
    const shown = data.jobs.length;
    document.getElementById("count").textContent = shown < data.total ? `${shown} of ${data.total}` : String(shown);
    warning.textContent = data.warnings.join("; ");
    warning.hidden = data.warnings.length === 0;
  }
  function query() {
    const q = new URLSearchParams();
    if (userSelect.value) q.set("user", userSelect.value);
    if (statusSelect.value) q.set("status", statusSelect.value);
    return q.toString();
  }
  async function load() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const answer = await fetch(base + "/api/queue?" + query(), {cache: "no-store", headers: {Accept: "application/json"}});
      if (!answer.ok) throw new Error("the server answered " + answer.status);
      render(await answer.json());
      document.body.dataset.loaded = String(Date.now());
    } catch (err) {
      warning.textContent = "Cannot refresh the queue: " + err.message;
      warning.hidden = false;
    } finally {
      busy = false;
      if (again) { again = false; load(); }
    }
  }
  form.addEventListener("change", () => {
    const q = query();
    history.replaceState(null, "", q ? "?" + q : location.pathname);
    load();
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  document.getElementById("refresh").addEventListener("click", load);
  setInterval(load, period);
  load();
})();
