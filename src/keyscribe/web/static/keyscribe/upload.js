// Landing page: drag-and-drop or choose one or several recordings; each is sent to POST /api/jobs
// (one request per file, in turn) with its upload progress, then its job status is followed live.
"use strict";
(function () {
  document.documentElement.classList.add("js");
  const form = document.getElementById("upload-form");
  const input = document.getElementById("file-input");
  const zone = document.getElementById("drop-zone");
  const list = document.getElementById("upload-list");
  if (!form) return;

  function csrfToken() {
    const field = form.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function row(file) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    const bar = document.createElement("div");
    bar.className = "mini-bar";
    bar.appendChild(document.createElement("div"));
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "waiting";
    li.append(name, bar, state);
    list.appendChild(li);
    return {li, name, fill: bar.firstChild, state};
  }

  function fail(r, message) {
    r.state.textContent = "refused";
    r.fill.style.background = "#e63946";
    r.fill.style.width = "100%";
    const msg = document.createElement("span");
    msg.className = "msg";
    msg.setAttribute("role", "alert");
    msg.textContent = message;
    r.li.appendChild(msg);
  }

  function send(file, r) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append("file", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/jobs");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) {
          r.fill.style.width = (100 * e.loaded / e.total).toFixed(1) + "%";
          r.state.textContent = "uploading " + Math.round(100 * e.loaded / e.total) + "%";
        }
      };
      xhr.onload = () => {
        const body = xhr.response || {};
        if (xhr.status === 201) {
          const a = document.createElement("a");
          a.href = body.url;
          a.textContent = file.name;
          r.name.replaceChildren(a);
          r.state.textContent = "queued";
          r.fill.style.width = "0%";
          follow(body.id, r);
        } else {
          fail(r, body.error || ("upload failed (HTTP " + xhr.status + ")"));
        }
        resolve();
      };
      xhr.onerror = () => { fail(r, "the upload was interrupted (network error)"); resolve(); };
      xhr.send(data);
    });
  }

  function follow(id, r) {
    const tick = async () => {
      let job;
      try {
        const res = await fetch("/api/jobs/" + encodeURIComponent(id), {headers: {Accept: "application/json"}});
        job = await res.json();
        if (!res.ok) throw new Error(job.error || res.status);
      } catch (e) { setTimeout(tick, 3000); return; }
      r.fill.style.width = (100 * job.progress).toFixed(1) + "%";
      r.state.textContent = job.stage === "done" ? "done — open" : job.stage;
      if (job.status === "failed") { fail(r, job.error || "failed"); return; }
      if (job.status === "done") { r.li.classList.add("done"); return; }
      setTimeout(tick, 1000);
    };
    tick();
  }

  async function uploadAll(files) {
    const rows = Array.from(files).map((f) => [f, row(f)]);
    for (const [f, r] of rows) await send(f, r);
  }

  input.addEventListener("change", () => { if (input.files.length) { uploadAll(input.files); input.value = ""; } });
  form.addEventListener("submit", (e) => { if (input.files.length) { e.preventDefault(); uploadAll(input.files); } });
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => { if (e.dataTransfer && e.dataTransfer.files.length) uploadAll(e.dataTransfer.files); });
  // a drop outside the zone must not navigate away from the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
})();
