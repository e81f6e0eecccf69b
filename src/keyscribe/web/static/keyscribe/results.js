// Results page: the score (verovio, in the browser, from the MusicXML, paged), the piano roll, the note
// list and playback of the transcription with a sampled piano (Salamander Grand, served by this
// server) that highlights the sounding notes in the score, the piano roll and the list.
// Everything is loaded from this server; nothing is requested elsewhere.
import createVerovioModule from "/static/vendor/verovio/verovio-module.mjs";
import { VerovioToolkit } from "/static/vendor/verovio/verovio.mjs";

const job = JSON.parse(document.getElementById("job-data").textContent);
const $ = (id) => document.getElementById(id);
const state = { notes: [], pedals: [], duration: 0, pos: 0, playing: false, t0: 0, pos0: 0,
                next: 0, active: new Set(), page: 1, pages: 0, tk: null, idOf: [], pageOf: new Map(),
                shownIds: new Set(), rows: [] };
window.keyscribe = state; // for tests and the curious

// ------------------------------------------------------------------------------------------ data
async function loadView() {
  const res = await fetch(`/jobs/${encodeURIComponent(job.id)}/files/view`);
  if (!res.ok) throw new Error(`notes: HTTP ${res.status}`);
  const view = await res.json();
  state.notes = view.notes;
  state.pedals = view.pedals;
  state.duration = Math.max(view.duration_s || 0, ...view.notes.map((n) => n.soff || n.off), 0);
  $("seek").max = state.duration.toFixed(2);
}

// ------------------------------------------------------------------------------------------ score
async function loadScore() {
  const box = $("score");
  if (!box) return;
  const [module, xml] = await Promise.all([
    createVerovioModule(),
    fetch(box.dataset.musicxml).then((r) => { if (!r.ok) throw new Error(`MusicXML: HTTP ${r.status}`); return r.text(); }),
  ]);
  const tk = new VerovioToolkit(module);
  tk.setOptions({ pageWidth: 1900, pageHeight: 2690, scale: 45, adjustPageHeight: true, breaks: "auto",
                  footer: "none", header: "auto", pageMarginLeft: 60, pageMarginRight: 60,
                  svgViewBox: true, xmlIdSeed: 1 });
  if (!tk.loadData(xml)) throw new Error("verovio could not read the MusicXML");
  state.tk = tk;
  state.pages = tk.getPageCount();
  mapNotesToScore(tk);
  showPage(1);
}

// Each transcribed note carries its position in the score ("q", quarter notes from the first
// downbeat). Verovio's timemap gives every engraved note's quarter-note time from the start; the
// two are matched by (time, pitch), which maps a played note to its element in the SVG.
function mapNotesToScore(tk) {
  const timemap = tk.renderToTimemap({ includeMeasures: false, includeRests: false });
  const byKey = new Map();
  const byPitch = new Map();
  let firstQ = Infinity;
  const scoreNotes = [];
  for (const ev of timemap) {
    for (const id of ev.on || []) {
      const midi = tk.getMIDIValuesForElement(id);
      if (!midi || midi.pitch === undefined) continue;
      scoreNotes.push({ id, q: ev.qstamp, pitch: midi.pitch });
      firstQ = Math.min(firstQ, ev.qstamp);
    }
  }
  const played = state.notes.filter((n) => n.q !== null && n.q !== undefined);
  const firstPlayed = Math.min(...played.map((n) => n.q));
  const shift = Number.isFinite(firstQ) && Number.isFinite(firstPlayed) ? firstQ - firstPlayed : 0;
  for (const s of scoreNotes) {
    const key = `${Math.round(s.q * 48)}:${s.pitch}`;
    if (!byKey.has(key)) byKey.set(key, []);
    byKey.get(key).push(s);
    if (!byPitch.has(s.pitch)) byPitch.set(s.pitch, []);
    byPitch.get(s.pitch).push(s);
  }
  const used = new Set();
  state.idOf = state.notes.map((n) => {
    if (n.q === null || n.q === undefined) return null;
    const q = n.q + shift;
    const exact = (byKey.get(`${Math.round(q * 48)}:${n.pitch}`) || []).find((s) => !used.has(s.id));
    let hit = exact;
    if (!hit) { // nearest unused note of the same pitch within a beat
      let best = 1.01;
      for (const s of byPitch.get(n.pitch) || []) {
        const d = Math.abs(s.q - q);
        if (!used.has(s.id) && d < best) { best = d; hit = s; }
      }
    }
    if (!hit) return null;
    used.add(hit.id);
    return hit.id;
  });
  state.pageOf = new Map();
  for (const id of state.idOf) if (id && !state.pageOf.has(id)) state.pageOf.set(id, tk.getPageWithElement(id));
  state.matched = state.idOf.filter(Boolean).length;
}

function showPage(n) {
  if (!state.tk || n < 1 || n > state.pages) return;
  state.page = n;
  $("score").innerHTML = state.tk.renderToSVG(n);
  $("page-no").textContent = `page ${n} of ${state.pages}`;
  $("prev-page").disabled = n <= 1;
  $("next-page").disabled = n >= state.pages;
  state.shownIds = new Set();
  highlight();
}

// ------------------------------------------------------------------------------------------ piano roll
const roll = { canvas: null, ctx: null, lo: 21, hi: 108, span: 12 };

function setupRoll() {
  roll.canvas = $("roll");
  roll.ctx = roll.canvas.getContext("2d");
  const pitches = state.notes.map((n) => n.pitch);
  roll.lo = Math.max(21, Math.min(...pitches, 60) - 2);
  roll.hi = Math.min(108, Math.max(...pitches, 72) + 2);
  const resize = () => { roll.canvas.width = roll.canvas.clientWidth * devicePixelRatio; roll.canvas.height = 300 * devicePixelRatio; drawRoll(); };
  window.addEventListener("resize", resize);
  roll.canvas.addEventListener("click", (e) => {
    const r = roll.canvas.getBoundingClientRect();
    const [start] = rollWindow();
    seek(start + (e.clientX - r.left) / r.width * roll.span);
  });
  resize();
}

function rollWindow() {
  const start = Math.max(0, Math.min(state.pos - roll.span * 0.2, state.duration - roll.span));
  return [Math.max(0, start), Math.max(0, start) + roll.span];
}

function drawRoll() {
  const { ctx, canvas, lo, hi } = roll;
  if (!ctx) return;
  const W = canvas.width, H = canvas.height, keys = hi - lo + 1, kh = (H - 10) / keys;
  const [t0, t1] = rollWindow();
  const x = (t) => (t - t0) / (t1 - t0) * W;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  for (let p = lo; p <= hi; p++) { // black-key rows shaded, C rows marked
    const y = H - 10 - (p - lo + 1) * kh;
    if ([1, 3, 6, 8, 10].includes(p % 12)) { ctx.fillStyle = "#f1f3f6"; ctx.fillRect(0, y, W, kh); }
    if (p % 12 === 0) { ctx.fillStyle = "#c9d1da"; ctx.fillRect(0, y + kh - 1, W, 1); }
  }
  ctx.fillStyle = "#8a96a3";
  ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
  for (let p = lo; p <= hi; p++) { // octave labels at the C rows
    if (p % 12 === 0) ctx.fillText(`C${p / 12 - 1}`, 3 * devicePixelRatio, H - 10 - (p - lo) * kh - 2);
  }
  ctx.fillStyle = "#f4a261";
  for (const [on, off] of state.pedals) if (off > t0 && on < t1) ctx.fillRect(x(on), H - 8, Math.max(1, x(off) - x(on)), 6);
  state.notes.forEach((n, i) => {
    if (n.off < t0 || n.on > t1) return;
    const y = H - 10 - (n.pitch - lo + 1) * kh;
    ctx.fillStyle = state.active.has(i) ? "#e63946" : `rgba(29, 53, 87, ${0.35 + 0.65 * n.vel / 127})`;
    ctx.fillRect(x(n.on), y + 0.5, Math.max(2, x(n.off) - x(n.on)), Math.max(1.5, kh - 1));
  });
  ctx.fillStyle = "#e63946";
  ctx.fillRect(x(state.pos), 0, 2 * devicePixelRatio, H);
}

// ------------------------------------------------------------------------------------------ note list
function fillNoteList() {
  const body = document.querySelector("#notes tbody");
  const frag = document.createDocumentFragment();
  state.rows = state.notes.map((n, i) => {
    const tr = document.createElement("tr");
    for (const v of [i + 1, n.on.toFixed(3), n.off.toFixed(3), n.name, n.pitch, n.vel]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => seek(n.on));
    frag.appendChild(tr);
    return tr;
  });
  body.appendChild(frag);
}

// ------------------------------------------------------------------------------------------ playback
// Salamander velocity layers (every third key sampled; Tone.Sampler repitches the keys between).
// The middle layer loads first so playback starts quickly; the soft and loud layers follow in the
// background and are used once they are in. Each layer is ~30 samples (~5 MB of Ogg Vorbis).
const LAYERS = [{ below: 56, layer: 5 }, { below: 96, layer: 10 }, { below: 128, layer: 15 }];
const FIRST = 1;
const SAMPLE_NOTES = (() => {
  const names = ["A0"];
  for (let o = 1; o <= 7; o++) names.push(`C${o}`, `D#${o}`, `F#${o}`, `A${o}`);
  names.push("C8");
  return names;
})();
let piano = null;

function makeSampler(layer, out) {
  const T = window.Tone;
  const urls = {};
  for (const name of SAMPLE_NOTES) urls[name] = `${encodeURIComponent(name)}v${layer}.ogg`;
  return new Promise((resolve, reject) => {
    const s = new T.Sampler({ urls, baseUrl: `/static/vendor/piano/${layer}/`, release: 0.8,
                              onload: () => resolve(s), onerror: reject }).connect(out);
  });
}

function loadPiano() {
  if (piano) return piano.first;
  const out = new window.Tone.Gain(0.8).toDestination();
  piano = { loaded: new Array(LAYERS.length).fill(null) };
  piano.first = makeSampler(LAYERS[FIRST].layer, out).then((s) => { piano.loaded[FIRST] = s; });
  piano.first.then(() => LAYERS.forEach((l, i) => {
    if (i !== FIRST) makeSampler(l.layer, out).then((s) => { piano.loaded[i] = s; }).catch(() => {});
  }));
  return piano.first;
}

function samplerFor(vel) {
  let i = LAYERS.findIndex((l) => vel < l.below);
  if (i < 0) i = LAYERS.length - 1;
  return piano.loaded[i] || piano.loaded[FIRST];
}

function releaseAll() { if (piano) piano.loaded.forEach((s) => s && s.releaseAll()); }

function now() { return state.playing ? state.pos0 + (window.Tone.now() - state.t0) : state.pos; }

function firstNoteFrom(t) {
  let lo = 0, hi = state.notes.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (state.notes[mid].on < t) lo = mid + 1; else hi = mid; }
  return lo;
}

async function play() {
  const T = window.Tone;
  $("play").disabled = true;
  $("play").textContent = "Loading piano…";
  try {
    await T.start();
    await loadPiano();
  } catch (e) {
    piano = null;
    $("play").disabled = false;
    $("play").textContent = "Play";
    $("clock").textContent = "the piano sound could not be loaded";
    return;
  }
  if (state.pos >= state.duration - 0.05) state.pos = 0;
  state.playing = true;
  state.t0 = T.now() + 0.1;
  state.pos0 = state.pos;
  state.next = firstNoteFrom(state.pos);
  $("play").disabled = false;
  $("play").textContent = "Pause";
  $("stop").disabled = false;
  schedule();
  requestAnimationFrame(frame);
}

function pause() {
  state.pos = now();
  state.playing = false;
  releaseAll();
  $("play").textContent = "Play";
}

function stop() { pause(); seek(0); }

function seek(t) {
  const wasPlaying = state.playing;
  if (wasPlaying) pause();
  state.pos = Math.max(0, Math.min(t, state.duration));
  update();
  if (wasPlaying) play();
}

function schedule() { // look-ahead scheduler: queue notes starting in the next 0.4 s
  if (!state.playing) return;
  const horizon = now() + 0.4;
  while (state.next < state.notes.length && state.notes[state.next].on < horizon) {
    const n = state.notes[state.next++];
    const at = state.t0 + (n.on - state.pos0);
    if (at < window.Tone.now() - 0.05) continue;
    const len = Math.max(0.05, (n.soff || n.off) - n.on);
    samplerFor(n.vel).triggerAttackRelease(window.Tone.Frequency(n.pitch, "midi").toNote(), len, at, n.vel / 127);
  }
  setTimeout(schedule, 100);
}

function frame() {
  if (!state.playing) return;
  state.pos = now();
  if (state.pos >= state.duration) { pause(); state.pos = state.duration; update(); return; }
  update();
  requestAnimationFrame(frame);
}

function update() {
  const t = state.pos;
  state.active = new Set();
  const start = firstNoteFrom(t - 30);
  for (let i = start; i < state.notes.length && state.notes[i].on <= t; i++) {
    const n = state.notes[i];
    if (n.on <= t && t < Math.max(n.off, n.on + 0.15)) state.active.add(i);
  }
  $("seek").value = t.toFixed(2);
  $("clock").textContent = `${clock(t)} / ${clock(state.duration)}`;
  highlight();
  drawRoll();
}

function highlight() {
  const ids = new Set();
  for (const i of state.active) { const id = state.idOf[i]; if (id) ids.add(id); }
  if (state.tk && ids.size && $("follow").checked) {
    const pages = [...ids].map((id) => state.pageOf.get(id)).filter(Boolean);
    if (pages.length && !pages.includes(state.page)) { showPage(Math.min(...pages)); return; }
  }
  for (const id of state.shownIds) if (!ids.has(id)) { const el = document.getElementById(id); if (el) el.classList.remove("playing"); }
  let firstEl = null;
  for (const id of ids) {
    const el = document.getElementById(id);
    if (el) { el.classList.add("playing"); firstEl = firstEl || el; }
  }
  state.shownIds = ids;
  if (firstEl && state.playing && $("follow").checked) keepInView(firstEl);
  state.rows.forEach((tr) => tr.classList.remove("playing"));
  let first = null;
  for (const i of state.active) { const tr = state.rows[i]; if (tr) { tr.classList.add("playing"); first = first || tr; } }
  if (first && state.playing) {
    const box = first.closest(".notes-box");
    if (first.offsetTop < box.scrollTop + 30 || first.offsetTop > box.scrollTop + box.clientHeight - 30) box.scrollTop = first.offsetTop - 60;
  }
}

let lastScroll = 0;
function keepInView(el) { // scroll the page so that the sounding notes stay visible below the player
  const now = performance.now();
  if (now - lastScroll < 800) return;
  const r = el.getBoundingClientRect();
  const top = $("player").getBoundingClientRect().bottom + 20;
  if (r.top < top || r.bottom > window.innerHeight - 20) {
    lastScroll = now;
    window.scrollBy({ top: r.top - top - 60, behavior: "smooth" });
  }
}

function clock(t) { const s = Math.floor(t); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; }

// ------------------------------------------------------------------------------------------ start
async function main() {
  await loadView();
  fillNoteList();
  setupRoll();
  update();
  $("play").textContent = "Play";
  $("play").disabled = state.notes.length === 0;
  $("play").addEventListener("click", () => (state.playing ? pause() : play()));
  $("stop").addEventListener("click", stop);
  $("seek").addEventListener("input", () => seek(parseFloat($("seek").value)));
  if ($("prev-page")) {
    $("prev-page").addEventListener("click", () => showPage(state.page - 1));
    $("next-page").addEventListener("click", () => showPage(state.page + 1));
  }
  try {
    await loadScore();
    document.body.dataset.score = "ready";
  } catch (e) {
    if ($("score")) $("score").innerHTML = `<p class="errors">The score could not be drawn: ${String(e.message).replace(/</g, "&lt;")}</p>`;
    document.body.dataset.score = "error";
  }
  document.body.dataset.ready = "1";
}

main().catch((e) => {
  document.body.dataset.ready = "error";
  const p = document.createElement("p");
  p.className = "errors";
  p.textContent = `The results could not be shown: ${e.message}`;
  $("results").prepend(p);
});
