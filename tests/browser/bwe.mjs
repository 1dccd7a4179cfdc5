// A simulcast player behind a narrow downlink, with two headless Chromium
// pages and the SDK (/sdk/arc.js), run inside a network namespace whose
// downlink the test limits (`tc tbf` on the host's end of its veth): the
// first page publishes its fake camera at 960x540 as three layers, the
// second receives it.
//
// 1. Unlimited, the receiver decodes the top layer (as the publisher sends
//    it then). The script prints {"phase":"limit"} and waits for a line on
//    its standard input (the test limits the downlink, then answers).
// 2. Limited, the receiver must come to a lower layer (the node's estimate
//    of its downlink fell) and stay below the top for 3 s; then, for 10 s,
//    frames must keep coming: the longest time without a newly decoded
//    frame is reported, and the frames decoded. The script prints
//    {"phase":"lift"} and waits for a line again (the test lifts the limit).
// 3. Unlimited again, the receiver must climb back to the top layer.
//
// Prints one JSON line (`ok`, each phase's time and what it saw) and exits
// 0, or 1 with "ok": false.
//
// Environment: ARC_URL, TOKENS (publisher's, receiver's), PUBLISHER (the
// publisher's identity), TIMEOUT_MS (per phase, 60000), CHROMIUM.
import readline from "node:readline";
import { launchChromium, open } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const [pubToken, subToken] = env("TOKENS", "").split(",");
const timeoutMs = Number(env("TIMEOUT_MS", "60000"));
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const told = async () => (await lines.next()).value;

const browser = await launchChromium();
const result = { ok: false, navigation: [], phases: [] };
let samples = [];
try {
  const pages = [];
  for (let i = 0; i < 2; i++) {
    const context = await browser.newContext({ bypassCSP: true });
    const page = await context.newPage();
    await open(page, `${base}/`, result.navigation);
    pages.push(page);
  }
  const [pub, sub] = pages;
  result.capture = await pub.evaluate(async ({ base, token }) => {
    const { Room } = await import("/sdk/arc.js");
    const room = await Room.connect(base, token, { autoSubscribe: false });
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 960, height: 540 } });
    await room.publishCamera(stream);
    window.room = room;
    const { width, height } = stream.getVideoTracks()[0].getSettings();
    return { width, height };
  }, { base, token: pubToken });
  await sub.evaluate(async ({ base, token }) => {
    const { Room } = await import("/sdk/arc.js");
    window.room = await Room.connect(base, token, {});
    // Every 100 ms: frames decoded and their size.
    window.samples = [];
    const t0 = performance.now();
    setInterval(async () => {
      const s = Object.values(await window.room.stats())[0];
      if (s) window.samples.push({ t: Math.round(performance.now() - t0), frames: s.frames, width: s.width ?? 0 });
    }, 100);
  }, { base, token: subToken });

  // The layers the publisher sends now (frames went out since the last look).
  let lastSent = new Map();
  async function active() {
    const layers = await pub.evaluate(() => window.room.sending());
    const live = layers.filter((l) => l.width > 0 && l.frames > (lastSent.get(l.rid) ?? 0));
    lastSent = new Map(layers.map((l) => [l.rid, l.frames]));
    return live.sort((a, b) => a.width - b.width);
  }
  const now = async () => sub.evaluate(() => window.samples.at(-1)?.t ?? 0);

  // Polls every 200 ms until `done(live layers, newest sample)` says so;
  // the receiver's time then, or null after the timeout.
  let lastLive = [];
  const sent = () => lastLive.map((l) => `${l.rid}:${l.width}`);
  async function until(done) {
    const started = Date.now();
    while (Date.now() - started < timeoutMs) {
      await sub.waitForTimeout(200);
      const live = await active();
      lastLive = live;
      samples = await sub.evaluate(() => window.samples);
      const s = samples.at(-1);
      if (s && done(live, s)) return s.t;
    }
    return null;
  }
  const atTop = (live, s) => live.length >= 2 && s.width === live.at(-1).width;

  // 1. The top layer, unlimited.
  let from = await now();
  let at = await until(atTop);
  result.phases.push({ name: "top layer", ms: at === null ? null : at - from, sent: sent() });
  if (at === null) throw new Error("the receiver never decoded the top layer");
  const topWidth = samples.at(-1).width;

  // 2. Limited: a lower layer, held 3 s, then 10 s watched.
  console.log(JSON.stringify({ phase: "limit" }));
  await told();
  from = await now();
  let below = null;
  at = await until((_, s) => {
    if (s.width > 0 && s.width < topWidth) below ??= s.t;
    else below = null;
    return below !== null && s.t - below >= 3000;
  });
  const lowered = { name: "limited: a lower layer", ms: below === null || at === null ? null : below - from };
  result.phases.push(lowered);
  if (at === null) throw new Error("the receiver stayed on the top layer behind the narrow link");
  await sub.waitForTimeout(10_000);
  samples = await sub.evaluate(() => window.samples);
  const watched = samples.filter((s) => s.t >= at && s.t <= at + 10_000);
  let gap = 0;
  let last = null;
  for (const s of watched) {
    if (last === null || s.frames > last.frames) {
      if (last !== null) gap = Math.max(gap, s.t - last.t);
      last = s;
    }
  }
  if (last !== null && watched.length) gap = Math.max(gap, watched.at(-1).t - last.t);
  lowered.watch = {
    longest_gap_ms: gap,
    frames: watched.length ? watched.at(-1).frames - watched[0].frames : 0,
    widths: [...new Set(watched.map((s) => s.width))],
  };

  // 3. Lifted: back to the top layer.
  console.log(JSON.stringify({ phase: "lift" }));
  await told();
  from = await now();
  at = await until(atTop);
  result.phases.push({ name: "lifted: the top layer again", ms: at === null ? null : at - from, sent: sent() });
  result.ok = at !== null && gap < 1500 && lowered.watch.frames >= 100;
  if (!result.ok) result.samples = samples.slice(-80);
} catch (e) {
  result.error = String(e);
  result.samples = samples.slice(-80);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
