// What the overview and the queue page share. Every text goes in through textContent, never as
// HTML, so nothing a job or a DPU reports can become markup or script.
"use strict";
window.dpuPage = Object.freeze({
  // "12 s ago" / "3 min ago" for an age in seconds; a poll that has not answered yet says so.
  ago(s) {
    if (s === null || s === undefined) return "not yet (the first refresh is running)";
    s = Math.max(0, Math.floor(s));
    return s < 120 ? `${s} s ago` : `${Math.floor(s / 60)} min ago`;
  },
  // A table cell holding `text`, appended to `row`.
  cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  },
});
