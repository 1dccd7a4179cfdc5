// One Chromium publishes its fake camera and microphone through Arc's
// /publish page (WHIP); a second page plays the room through /play (WHEP).
// Waits until the player has decoded enough video frames and received enough
// audio packets, then prints one JSON line with what it saw and exits 0; on
// timeout or error it prints the same line with "ok": false and exits 1.
//
// Environment: ARC_URL, ROOM, PUB_TOKEN, SUB_TOKEN, CODEC (VP8|H264|…),
// FRAMES (60), AUDIO_PACKETS (100), TIMEOUT_MS (15000), CHROMIUM (/usr/bin/chromium),
// HOLD_MS (0: how long to keep both pages open after success),
// PLAY (1; 0: only publish, succeed once connected, then hold),
// PUBLISH (1; 0: only play, e.g. another client publishes),
// TRANSPORT (tcp: both pages drop the node's UDP candidates, as clients whose UDP is blocked),
// SCREENSHOT (a PNG path: on success, a picture of the player page),
// WATCH_MS (0: once the frames and packets arrived, keep playing this long and
// report the player's figures at its end, e.g. freezes under loss),
// RESTART_ICE (play | publish | both: once media flows, that page restarts
// ICE over its session's PATCH; success needs the restart answered and 30
// more frames decoded after it, reported as "restart").
import { launchChromium, open } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const room = env("ROOM", "demo");
const codec = env("CODEC", "VP8");
const frames = Number(env("FRAMES", "60"));
const audioPackets = Number(env("AUDIO_PACKETS", "100"));
const timeoutMs = Number(env("TIMEOUT_MS", "15000"));
const holdMs = Number(env("HOLD_MS", "0"));
const playToo = env("PLAY", "1") !== "0";
const publishToo = env("PUBLISH", "1") !== "0";

const browser = await launchChromium();
const result = { ok: false, codec, room, navigation: [] };
try {
  const context = await browser.newContext();
  const q = (o) => new URLSearchParams(o).toString();
  const transport = env("TRANSPORT", "");
  const pub = publishToo ? await context.newPage() : null;
  if (pub) await open(pub, `${base}/publish?${q({ room, token: env("PUB_TOKEN", ""), codec, autostart: "1", transport })}`, result.navigation);
  const play = playToo ? await context.newPage() : pub;
  if (playToo) await open(play, `${base}/play?${q({ room, token: env("SUB_TOKEN", ""), autostart: "1", transport })}`, result.navigation);
  const started = Date.now();
  let stats = null;
  // The player's ICE, DTLS and connection states, shown when it fails.
  let trace = [], pubTrace = [];
  while (Date.now() - started < timeoutMs) {
    await play.waitForTimeout(250);
    const [p, s] = await Promise.all([
      pub ? pub.evaluate(() => ({ state: window.arc.state, error: window.arc.error, trace: window.arc.trace ?? [] })) : Promise.resolve({ state: "not publishing", error: null }),
      play.evaluate(() => ({ state: window.arc.state, error: window.arc.error, stats: window.arc.stats ?? null, trace: window.arc.trace ?? [] })),
    ]);
    result.publisher = { state: p.state, error: p.error };
    pubTrace = p.trace;
    result.player = { state: s.state, error: s.error };
    trace = s.trace;
    stats = s.stats;
    if (p.error || s.error) break;
    if (!playToo && p.state === "connected") {
      result.ok = true;
      break;
    }
    if (stats && stats.framesDecoded >= frames && stats.audioPackets >= audioPackets) {
      result.ok = true;
      break;
    }
  }
  result.elapsed_ms = Date.now() - started;
  if (!result.ok && result.player) result.player.trace = trace;
  if (!result.ok && result.publisher && pubTrace) result.publisher.trace = pubTrace;
  const watchMs = Number(env("WATCH_MS", "0"));
  if (result.ok && watchMs > 0 && playToo) {
    // Figures over the watch alone: what the player saw from its start is taken off.
    const before = stats;
    await play.waitForTimeout(watchMs);
    const after = await play.evaluate(() => window.arc.stats);
    const keys = ["framesDecoded", "videoPackets", "videoLost", "nacksSent", "retransmitted", "freezes", "freezeSeconds"];
    result.watch = { ms: watchMs, rtx: after.rtx };
    for (const k of keys) result.watch[k] = after[k] - before[k];
    stats = after;
  }
  result.stats = stats;
  const restartIce = env("RESTART_ICE", "");
  if (result.ok && restartIce) {
    result.ok = false;
    const pages = [];
    if (["publish", "both"].includes(restartIce) && pub) pages.push(pub);
    if (["play", "both"].includes(restartIce) && playToo) pages.push(play);
    const from = stats.framesDecoded;
    const t0 = Date.now();
    await Promise.all(pages.map((pg) => pg.evaluate(() => window.arc.restartIce("asked"))));
    result.restart = { pages: pages.length, answered_ms: Date.now() - t0 };
    while (Date.now() - t0 < timeoutMs) {
      await play.waitForTimeout(250);
      const seen = await Promise.all(pages.map((pg) => pg.evaluate(() => ({ restarts: window.arc.restarts, error: window.arc.error }))));
      stats = await play.evaluate(() => window.arc.stats);
      if (result.restart.first_frame_ms === undefined && stats.framesDecoded > from + 1) result.restart.first_frame_ms = Date.now() - t0;
      const errors = seen.map((x) => x.error).filter(Boolean);
      if (errors.length) { result.restart.errors = errors; break; }
      if (seen.every((x) => x.restarts >= 1) && stats.framesDecoded >= from + 30) {
        result.ok = true;
        break;
      }
    }
    result.restart.frames_after = stats.framesDecoded - from;
    result.restart.ms = Date.now() - t0;
  }
  const shot = env("SCREENSHOT", "");
  if (result.ok && shot) {
    await play.screenshot({ path: shot, fullPage: true });
    result.screenshot = shot;
  }
  if (result.ok && holdMs > 0) {
    console.log(JSON.stringify({ ...result, holding_ms: holdMs }));
    await play.waitForTimeout(holdMs);
  }
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
