// The classify page: send the file or text to /api/classify; the threshold slider resends with its value.
(function () {
  "use strict";
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const form = document.getElementById("classify-form");
  const slider = document.getElementById("threshold");
  const useDefault = document.getElementById("use-default");
  const shown = document.getElementById("threshold-value");
  const result = document.getElementById("result");
  const failure = document.getElementById("result-error");
  let timer = null;

  function body() {
    const data = new FormData();
    data.append("task_type", document.getElementById("task").value);
    const file = document.getElementById("file").files[0];
    const text = document.getElementById("text").value;
    if (file) data.append("file", file);
    else data.append("text", text);
    if (!useDefault.checked) data.append("threshold", slider.value);
    return data;
  }

  function cell(row, text) { const td = row.insertCell(); td.textContent = text; return td; }

  function show(answer) {
    failure.hidden = true;
    result.hidden = false;
    document.getElementById("result-label").textContent = answer.label === null
      ? "No model for this input: decided on its metadata" : answer.label + " (" + answer.confidence.toFixed(3) + ")";
    document.getElementById("result-model").textContent = "Model " + (answer.model || "none") + " · " + answer.kind
      + (answer.language ? " · " + answer.language : "") + " · " + answer.latency_ms + " ms";
    const threshold = useDefault.checked ? "the model's threshold" : "threshold " + Number(slider.value).toFixed(2);
    document.getElementById("result-effect").textContent = answer.below_threshold === null ? "" :
      (answer.below_threshold ? "Below " : "At or above ") + threshold + ".";
    const d = answer.decision;
    const decision = document.getElementById("result-decision");
    decision.textContent = "Routing: rule " + d.rule + " → " + d.destinations.join(", ");
    decision.className = d.destinations.indexOf("review-queue") >= 0 ? "review" : "";
    const rows = document.querySelector("#result-scores tbody");
    rows.innerHTML = "";
    answer.labels.forEach(function (s) {
      const row = rows.insertRow();
      cell(row, s.label);
      cell(row, s.confidence.toFixed(3));
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.round(s.confidence * 240) + "px";
      row.insertCell().appendChild(bar);
    });
  }

  async function classify() {
    const response = await fetch("/api/classify", { method: "POST", body: body(), headers: { "X-CSRF-Token": token } });
    const answer = await response.json().catch(function () { return { detail: response.statusText }; });
    if (response.ok) show(answer);
    else {
      result.hidden = true;
      failure.hidden = false;
      failure.textContent = response.status + ": " + (typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail));
    }
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); classify(); });
  function resend() {
    shown.textContent = useDefault.checked ? "model default" : Number(slider.value).toFixed(2);
    if (result.hidden) return;
    clearTimeout(timer);
    timer = setTimeout(classify, 150);
  }
  slider.addEventListener("input", function () { useDefault.checked = false; resend(); });
  useDefault.addEventListener("change", resend);
})();
