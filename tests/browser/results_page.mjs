// Real-browser check of the web app with Debian's chromium driven by playwright-core (never a browser
// download): upload a recording on the landing page, wait for the result, check the score SVG has notes,
// press play and see notes highlighted, download the MIDI; fail on any request that leaves localhost.
//
//   node tests/browser/results_page.mjs BASE_URL RECORDING OUT_DIR [SCREENSHOT_DIR]
// Prints one JSON line with what it saw; exits 1 on any failure.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [base, recording, outDir, shotDir] = process.argv.slice(2);
const CHROMIUM = process.env.KEYSCRIBE_CHROMIUM || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
  "--disable-extensions", "--autoplay-policy=no-user-gesture-required", "--mute-audio"];
const LOCAL = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);
const result = { external: [], pageErrors: [], consoleErrors: [], steps: [] };

function step(name, extra = {}) { result.steps.push({ name, t: Date.now(), ...extra }); }
function isLocal(url) {
  const u = new URL(url);
  if (["data:", "blob:", "about:"].includes(u.protocol)) return true;
  return LOCAL.has(u.hostname);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
let failed = null;
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    result.external.push(url);
    return route.abort("blockedbyclient");
  });
  context.on("request", (req) => { if (!isLocal(req.url())) result.external.push(req.url()); });
  const page = await context.newPage();
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });

  await page.goto(base + "/");
  step("landing");
  if (shotDir) await page.screenshot({ path: path.join(shotDir, "upload.png") });
  // drag and drop the recording onto the drop zone, as a person would
  const bytes = fs.readFileSync(recording).toString("base64");
  const dataTransfer = await page.evaluateHandle(([b64, name]) => {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([raw], name, { type: "audio/ogg" }));
    return dt;
  }, [bytes, path.basename(recording)]);
  for (const type of ["dragenter", "dragover", "drop"]) await page.dispatchEvent("#drop-zone", type, { dataTransfer });
  await page.waitForSelector("#upload-list li a", { timeout: 60_000 });
  step("uploaded");
  await page.waitForSelector("#upload-list li.done, #upload-list li .msg", { timeout: 600_000 });
  const refused = await page.$("#upload-list li .msg");
  if (refused) throw new Error("job failed: " + (await refused.textContent()));
  step("job done");
  await page.click("#upload-list li a");
  await page.waitForSelector("body[data-ready='1']", { timeout: 60_000 });
  await page.waitForSelector("body[data-score='ready']", { timeout: 120_000 });
  result.scoreNotes = await page.locator("#score svg g.note").count();
  result.pages = await page.evaluate(() => window.keyscribe.pages);
  result.notes = await page.evaluate(() => window.keyscribe.notes.length);
  result.matched = await page.evaluate(() => window.keyscribe.matched);
  result.warning = await page.evaluate(() => (document.querySelector("#results .notice") || {}).textContent || null);
  step("score shown", { scoreNotes: result.scoreNotes });
  if (result.notes > 0) await playAndShoot();
  else if (shotDir) await page.screenshot({ path: path.join(shotDir, "results.png"), fullPage: true });

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("a[data-kind='midi']")]);
  result.midiName = download.suggestedFilename();
  result.midiPath = path.join(outDir, "download.mid");
  await download.saveAs(result.midiPath);
  step("midi downloaded");

  // the history lists the job
  await page.goto(base + "/jobs/");
  result.historyRows = await page.locator("#history tbody tr").count();
  if (result.external.length) throw new Error("requests left the server: " + result.external.join(", "));
  if (result.pageErrors.length) throw new Error("page errors: " + result.pageErrors.join(" | "));

async function playAndShoot() {
  if (!(result.scoreNotes > 0)) throw new Error("the score SVG shows no notes");
  await page.click("#play");
  await page.waitForSelector("#score g.note.playing", { timeout: 60_000 });
  result.highlightedInScore = await page.locator("#score g.note.playing").count();
  result.highlightedInList = await page.locator("#notes tr.playing").count();
  result.playing = await page.evaluate(() => window.keyscribe.playing);
  step("playing", { highlighted: result.highlightedInScore });
  if (shotDir) {
    await page.waitForTimeout(3000);
    await page.screenshot({ path: path.join(shotDir, "results.png"), fullPage: true });
  }
  await page.click("#play"); // pause
}
} catch (e) {
  failed = e;
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(failed ? 1 : 0);
