// The live view: decisions arrive as server-sent events; counts per label and destination per minute.
(function () {
  "use strict";
  const minutes = {};  // "YYYY-MM-DDTHH:MM" -> {total, labels, destinations}
  JSON.parse(document.getElementById("initial-counts").textContent).forEach(function (b) { minutes[b.minute] = b; });
  const state = document.getElementById("stream-state");

  function add(counter, key) { counter[key] = (counter[key] || 0) + 1; }

  function table(id, counts) {
    const body = document.querySelector("#" + id + " tbody");
    body.innerHTML = "";
    const max = Math.max(1, ...Object.values(counts));
    Object.entries(counts).sort(function (a, b) { return b[1] - a[1]; }).forEach(function (entry) {
      const row = body.insertRow();
      row.insertCell().textContent = entry[0];
      row.insertCell().textContent = entry[1];
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.round(entry[1] / max * 200) + "px";
      row.insertCell().appendChild(bar);
    });
  }

  function redraw() {
    const keys = Object.keys(minutes).sort().slice(-60);
    const labels = {}, destinations = {};
    keys.forEach(function (k) {
      Object.entries(minutes[k].labels).forEach(function (e) { labels[e[0]] = (labels[e[0]] || 0) + e[1]; });
      Object.entries(minutes[k].destinations).forEach(function (e) { destinations[e[0]] = (destinations[e[0]] || 0) + e[1]; });
    });
    table("by-label", labels);
    table("by-destination", destinations);
    const bars = document.getElementById("per-minute");
    bars.innerHTML = "";
    const max = Math.max(1, ...keys.map(function (k) { return minutes[k].total; }));
    keys.forEach(function (k) {
      const bar = document.createElement("div");
      bar.style.height = Math.round(minutes[k].total / max * 100) + "%";
      bar.title = k.slice(11) + " UTC: " + minutes[k].total;
      bars.appendChild(bar);
    });
  }

  function show(d) {
    const minute = (d.decided_at || "").slice(0, 16);
    const bucket = minutes[minute] || (minutes[minute] = { minute: minute, total: 0, labels: {}, destinations: {} });
    bucket.total += 1;
    add(bucket.labels, d.label || "(no label)");
    (d.destinations || []).forEach(function (x) { add(bucket.destinations, x); });
    const body = document.querySelector("#decisions tbody");
    const row = body.insertRow(0);
    row.dataset.id = d.message_id;
    [(d.decided_at || "").slice(11, 19), d.message_type, d.label || "–",
     d.confidence === null ? "–" : d.confidence.toFixed(2), d.rule, (d.destinations || []).join(", "), d.model || "–"]
      .forEach(function (text) { row.insertCell().textContent = text; });
    while (body.rows.length > 200) body.deleteRow(-1);
    redraw();
  }

  const source = new EventSource("/api/decisions/stream");
  source.onopen = function () { state.textContent = "connected"; };
  source.onerror = function () { state.textContent = "reconnecting…"; };
  source.addEventListener("decision", function (event) { show(JSON.parse(event.data)); });
  redraw();
})();
