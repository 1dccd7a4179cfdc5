// A simulcast player behind a narrow downlink, with two headless Chromium
// browsers and the SDK (/sdk/arc.js): the publisher's runs here, the
// player's in a network namespace (NETNS) whose downlink the test limits
// (`tc tbf` on the host's end of its veth). The publisher sends its fake
// camera at 960x540 as three layers; the player receives it. (Both pages in
// the namespace, the limit also delayed and dropped what the node sends
// the publisher — keyframe requests, consent checks — and a CI run saw the
// publisher's connection restart and its track replaced.)
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
// Environment: ARC_URL, TOKENS (publisher's, receiver's), NETNS (the
// player's namespace; none: both here), TIMEOUT_MS (per phase, 60000),
// CHROMIUM.
import readline from "node:readline";
import { launchChromium } from "./chromium.mjs";
import { longestGap, simulcastPair } from "./simulcast_pair.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const [pubToken, subToken] = env("TOKENS", "").split(",");
const timeoutMs = Number(env("TIMEOUT_MS", "60000"));
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const told = async () => (await lines.next()).value;

const pubBrowser = await launchChromium();
const subBrowser = process.env.NETNS ? await launchChromium({ netns: process.env.NETNS }) : pubBrowser;
const result = { ok: false, navigation: [], phases: [] };
let samples = [];
try {
  const browsers = [pubBrowser, subBrowser];
  const { sub, capture, active } = await simulcastPair(browsers, base, pubToken, subToken, result.navigation);
  result.capture = capture;
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
  const gap = longestGap(watched);
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
  await subBrowser.close();
  if (subBrowser !== pubBrowser) await pubBrowser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
