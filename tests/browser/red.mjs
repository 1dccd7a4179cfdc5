// Redundant audio (RFC 2198 `audio/red`) through Arc with three headless
// Chromium pages and the SDK (/sdk/arc.js): the first publishes its fake
// microphone (the SDK puts RED first, so Chromium sends it), the second
// receives with RED (the SDK's default), the third without (`red: false`:
// its offer leaves RED out, and the node sends it each packet's newest
// frame as plain Opus). Over WATCH_MS, each receiver's audio packets and
// samples, the share of samples it had to conceal (under a quarter: a
// stream it could not decode would be all concealed; a loaded machine
// conceals some) and the audio energy it played (the fake microphone beeps once a second), with the publisher's
// offer and answer (RED first in both).
// Prints one JSON line (`ok` and those figures) and exits 0, or 1 with
// "ok": false.
//
// Environment: ARC_URL, TOKENS (publisher's, receivers'), WATCH_MS (8000),
// TIMEOUT_MS (30000), CHROMIUM.
import { launchChromium, open } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const tokens = env("TOKENS", "").split(",");
const watchMs = Number(env("WATCH_MS", "8000"));
const timeoutMs = Number(env("TIMEOUT_MS", "30000"));

const browser = await launchChromium();
const result = { ok: false, navigation: [] };

// The codec and figures of a page's connections' audio (`outbound-rtp` for
// the publisher, `inbound-rtp` for a receiver).
async function audio(page, type) {
  return page.evaluate(async (type) => {
    const room = window.room;
    const pcs = type === "outbound-rtp" ? [room.publisher?.pc] : [...room.subs.values()].map((l) => l.pc);
    for (const pc of pcs.filter(Boolean)) {
      const reports = await pc.getStats();
      // The RFC 6464 level the node forwards, as the receiver reads it.
      const level = type === "inbound-rtp"
        ? pc.getReceivers().filter((r) => r.track?.kind === "audio").flatMap((r) => r.getSynchronizationSources())
          .map((s) => s.audioLevel).find((l) => typeof l === "number") ?? null
        : null;
      for (const r of reports.values()) {
        if (r.type !== type || r.kind !== "audio") continue;
        return {
          level,
          codec: reports.get(r.codecId)?.mimeType ?? null,
          packets: r.packetsReceived ?? r.packetsSent ?? 0,
          samples: r.totalSamplesReceived ?? 0,
          concealed: r.concealedSamples ?? 0,
          energy: r.totalAudioEnergy ?? 0,
        };
      }
    }
    return null;
  }, type);
}

try {
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const context = await browser.newContext({ bypassCSP: true });
    const page = await context.newPage();
    await open(page, `${base}/`, result.navigation);
    pages.push(page);
  }
  const [pub, withRed, without] = pages;
  await pub.evaluate(async ({ base, token }) => {
    const { Room } = await import("/sdk/arc.js");
    const room = await Room.connect(base, token, { autoSubscribe: false });
    await room.publishMicrophone(await navigator.mediaDevices.getUserMedia({ audio: true }));
    window.room = room;
  }, { base, token: tokens[0] });
  for (const [page, token, red] of [[withRed, tokens[1], true], [without, tokens[2], false]]) {
    await page.evaluate(async ({ base, token, red }) => {
      const { Room } = await import("/sdk/arc.js");
      const room = new Room(base, token, { red });
      // Played, as the meeting app does (a browser decodes audio it plays).
      room.on("remoteStream", ({ stream }) => {
        const el = new Audio();
        el.srcObject = stream;
        el.play().catch(() => {});
        document.body.append(el);
      });
      await room.connect();
      window.room = room;
    }, { base, token, red });
  }
  // Until both receivers hear something, then WATCH_MS more.
  const started = Date.now();
  let heard = false;
  while (!heard && Date.now() - started < timeoutMs) {
    await pub.waitForTimeout(250);
    const got = await Promise.all([audio(withRed, "inbound-rtp"), audio(without, "inbound-rtp")]);
    heard = got.every((a) => a && a.packets > 0);
  }
  // Counted over the watch alone (not the start, when a page may play
  // before packets come).
  await pub.waitForTimeout(1000);
  const before = await Promise.all([audio(withRed, "inbound-rtp"), audio(without, "inbound-rtp")]);
  await pub.waitForTimeout(watchMs);
  result.sent = await audio(pub, "outbound-rtp");
  result.sdp = await pub.evaluate(() => {
    const pc = window.room.publisher.pc;
    const lines = (d) => (d?.sdp ?? "").split("\r\n").filter((l) => /m=audio|rtpmap|fmtp/.test(l)).slice(0, 3);
    return { local: lines(pc.localDescription), remote: lines(pc.remoteDescription) };
  });
  const since = (a, b) => a && b && Object.fromEntries(Object.entries(a).map(([k, v]) => [k, typeof v === "number" && k !== "level" ? v - (b[k] ?? 0) : v]));
  result.with_red = since(await audio(withRed, "inbound-rtp"), before[0]);
  result.without_red = since(await audio(without, "inbound-rtp"), before[1]);
  // Chromium's stats name the decoder's codec (Opus) for RED too: which one
  // came is the node's to tell (its RED metrics).
  const fine = (a) =>
    a && a.level !== null && a.packets >= watchMs / 40 && a.samples > 0 && a.concealed / a.samples < 0.25 && a.energy > 0;
  result.ok = heard && fine(result.with_red) && fine(result.without_red);
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
