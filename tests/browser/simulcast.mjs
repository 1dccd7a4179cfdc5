// Simulcast through Arc with two headless Chromium pages and the SDK
// (/sdk/arc.js): the first publishes its fake camera at 960x540 as three
// layers (the SDK's default: 240x135, 480x270, 960x540), the second
// receives it and asks, in turn, for the low layer, for the size of a
// 480x270 tile, and for the best again. After each, the size of the frames
// the receiver decodes must come to that layer's (as the publisher sends it
// then, at least two layers live), and the picture must not
// stop meanwhile: the node moves it at the new layer's keyframe, so the
// longest time without a decoded frame from 1 s before the first frame of
// the new layer to 1 s after it stays under a second. While the receiver
// asks for the low layer alone, the node has the publisher pause the other
// two (dynacast: the publisher's SDK turns those encodings off) without
// the picture stopping, and resumes them when asked. Prints one JSON line
// (`ok`, each step's time and that gap) and exits 0, or 1 with "ok": false.
//
// Environment: ARC_URL, TOKENS (publisher's, receiver's), PUBLISHER (the
// publisher's identity), TIMEOUT_MS (per step, 30000), CHROMIUM.
import { launchChromium } from "./chromium.mjs";
import { longestGap, simulcastPair } from "./simulcast_pair.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const [pubToken, subToken] = env("TOKENS", "").split(",");
const publisher = env("PUBLISHER", "cam");
const timeoutMs = Number(env("TIMEOUT_MS", "30000"));

const browser = await launchChromium();
const result = { ok: false, navigation: [], steps: [] };
let samples = [];
try {
  const { pub, sub, capture, active } = await simulcastPair(browser, base, pubToken, subToken, result.navigation);
  result.capture = capture;

  // Waits until the receiver decodes frames of the layer `goal` picks from
  // the live ones; then the step's time and the longest time without a new
  // decoded frame from the request until 2 s after the change.
  async function step(name, preference, goal) {
    const asked = await sub.evaluate(() => window.samples.at(-1)?.t ?? 0);
    if (preference) {
      await sub.evaluate(({ who, p }) => window.room.setPreferredQuality(who, p), { who: publisher, p: preference });
    }
    const started = Date.now();
    let reached = null, sent = [];
    while (Date.now() - started < timeoutMs) {
      await sub.waitForTimeout(200);
      sent = await active();
      samples = await sub.evaluate(() => window.samples);
      const want = goal(sent);
      const now = samples.at(-1);
      if (reached === null && want && now && now.t >= asked && now.width === want.width) reached = now.t;
      if (reached !== null && samples.at(-1).t >= reached + 2000) break;
    }
    // Around the change: from 1 s before the first frame of the new layer
    // to 1 s after it (the picture must go on through the switch).
    const around = samples.filter((s) => reached !== null && s.frames > 0 && s.t >= reached - 1000 && s.t <= reached + 1000);
    const gap = longestGap(around);
    const widths = [...new Set(samples.filter((s) => s.t >= asked).map((s) => s.width))];
    const r = { name, ms: reached === null ? null : reached - asked, switch_gap_ms: gap, widths, sent: sent.map((l) => `${l.rid}:${l.width}`) };
    result.steps.push(r);
    return reached !== null;
  }

  // Dynacast: with the only player on the low layer, the node asks the
  // publisher to pause the two above it (three seconds after the player
  // stopped wanting them); the publisher's SDK turns those encodings off,
  // and the player's picture goes on. Then the step's time from the
  // player's request and the longest gap in its picture meanwhile.
  async function paused(since) {
    const started = Date.now();
    let sending = [], seen = null;
    while (Date.now() - started < timeoutMs) {
      await sub.waitForTimeout(200);
      const live = await active();
      sending = await pub.evaluate(() => window.room.sending());
      const off = sending.filter((l) => !l.active).map((l) => l.rid).sort().join(",");
      if (off === "f,h" && live.length === 1 && live[0].rid === "q") {
        seen = Date.now();
        break;
      }
    }
    samples = await sub.evaluate(() => window.samples);
    const during = samples.filter((s) => s.t >= since.t && s.frames > 0);
    const r = {
      name: "dynacast pause",
      ms: seen === null ? null : seen - since.wall,
      switch_gap_ms: longestGap(during),
      sent: sending.map((l) => `${l.rid}:${l.active ? "on" : "off"}`),
    };
    result.steps.push(r);
    return seen !== null;
  }

  const top = (live) => (live.length >= 2 ? live.at(-1) : null);
  let lowAsked = null;
  const ok =
    (await step("top layer", null, top)) &&
    (lowAsked = { wall: Date.now(), t: await sub.evaluate(() => window.samples.at(-1)?.t ?? 0) }) &&
    (await step("low", { quality: "low" }, (live) => (live.length >= 2 ? live[0] : null))) &&
    (await paused(lowAsked)) &&
    // The middle layer resumes for a 480x270 tile, the top one for the best.
    (await step("480x270 tile", { quality: "high", width: 480, height: 270 },
      (live) => (live.some((l) => l.rid === "h") ? live.find((l) => l.width >= 480 && l.height >= 270) ?? live.at(-1) : null))) &&
    (await step("high", { quality: "high" }, (live) => (live.some((l) => l.rid === "f") ? live.at(-1) : null)));
  // No step may freeze the picture: a layer change happens at a keyframe
  // of the new layer while the old one goes on.
  const frozen = result.steps.filter((s) => s.switch_gap_ms > 1000);
  result.ok = ok && frozen.length === 0;
  if (!result.ok) result.samples = samples.slice(-80);
} catch (e) {
  result.error = String(e);
  result.samples = samples.slice(-80);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
