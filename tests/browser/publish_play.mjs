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
// SCREENSHOT (a PNG path: on success, a picture of the player page).
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
  while (Date.now() - started < timeoutMs) {
    await play.waitForTimeout(250);
    const [p, s] = await Promise.all([
      pub ? pub.evaluate(() => ({ state: window.arc.state, error: window.arc.error })) : Promise.resolve({ state: "not publishing", error: null }),
      play.evaluate(() => ({ state: window.arc.state, error: window.arc.error, stats: window.arc.stats ?? null })),
    ]);
    result.publisher = p;
    result.player = { state: s.state, error: s.error };
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
  result.stats = stats;
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
