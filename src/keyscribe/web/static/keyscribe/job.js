// Job page while the job is queued or running: poll GET /api/jobs/<id> and show the stage, the
// progress and any error; reload into the results page when it is done.
"use strict";
(function () {
  const job = JSON.parse(document.getElementById("job-data").textContent);
  const order = ["queued", "decoding", "transcribing", "engraving", "done"];
  const words = {queued: "Waiting for a worker…", decoding: "Decoding the recording…",
                 transcribing: "Listening for notes and pedal…", engraving: "Engraving the score…",
                 done: "Done", failed: "Failed"};
  const fill = document.getElementById("bar-fill");
  const text = document.getElementById("status-text");
  const errBox = document.getElementById("job-error");
  const errText = document.getElementById("job-error-text");

  function show(j) {
    const at = order.indexOf(j.stage);
    document.querySelectorAll("#stages li").forEach((li) => {
      const i = order.indexOf(li.dataset.stage);
      li.className = j.stage === "failed" ? "" : (i < at ? "past" : (i === at ? "current" : ""));
    });
    fill.style.width = (100 * j.progress).toFixed(1) + "%";
    text.textContent = words[j.stage] + (j.status === "running" ? " " + Math.round(100 * j.progress) + "%" : "");
    if (j.error) { errText.textContent = j.error; errBox.hidden = false; fill.style.background = "#e63946"; }
  }

  let failures = 0;
  async function poll() {
    try {
      const res = await fetch("/api/jobs/" + encodeURIComponent(job.id), {headers: {Accept: "application/json"}});
      const j = await res.json();
      if (!res.ok) throw new Error(j.error || String(res.status));
      failures = 0;
      show(j);
      if (j.status === "done") { location.reload(); return; }
      if (j.status === "failed") return;
    } catch (e) {
      failures += 1;
      text.textContent = "Lost contact with the server, retrying… (" + e.message + ")";
    }
    setTimeout(poll, failures ? Math.min(10000, 1000 * 2 ** failures) : 1000);
  }
  show(job);
  if (job.status !== "failed" && job.status !== "done") poll();
})();
