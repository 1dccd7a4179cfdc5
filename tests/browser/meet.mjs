// Several Chromium pages (fake camera and microphone) join one meeting
// through Arc's /meet page (the signalling socket, /v1/rtc). Waits until
// every page decodes video and receives audio from every other page, then
// the first page says something in the chat and every other page must show
// it. Prints one JSON line with what each page saw and exits 0; on timeout
// or error the same line has "ok": false and the exit code is 1.
//
// Environment: ARC_URL, TOKENS (comma-separated, one per page; without
// them each page asks arc-control dev for a development token), NAMES
// (comma-separated display names), ROOM, FRAMES (30), AUDIO_PACKETS (50),
// TIMEOUT_MS (30000), CHROMIUM (/usr/bin/chromium), SCREEN (1: then the
// first page shares a screen, every other page must receive it and see it
// stop), MODERATE (1: then the first page, whose token has the admin grant,
// mutes the second person — then no page may restart its ICE for 4 s — and removes the third), SCREENSHOT (a PNG path: on success, a picture of the first page, or
// with SCREEN of the second page while the screen is shared), FAILOVER (1:
// once media flows and the chat went round, print {"phase":"media"} and wait
// for a line on stdin — the test kills the room's media node then —, and
// measure until every page joined again by itself and decodes video and
// receives audio from every other page again: failover_ms), SPEAK (1: the
// fake microphones play a steady tone; once the chat went round every page
// must have seen everyone as an active speaker, then every page but the
// first mutes its microphone and every page must see the first alone),
// QUALITY (1: every page must be told everyone's connection quality, and on
// loopback none may be poor), RESUME (1: the second page's socket drops; it
// must resume its session — same participant, nobody sees it leave — and
// media must keep flowing both ways), RELAY (1: the pages send and receive
// only through the server's TURN servers; every received stream must come
// over a relay candidate), BREAK_PATH (1: once media flows and the chat went
// round, print {"phase":"media"} and wait for a line on stdin — the test
// drops every UDP 5-tuple the pages use then —, and measure until every
// page restarted its connections' ICE and decodes more video and receives
// more audio from every other page, with the same participant and nobody
// seen leaving: restored_ms).
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium, open } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const tokens = env("TOKENS", "").split(",").filter(Boolean);
const names = env("NAMES", "").split(",");
const frames = Number(env("FRAMES", "30"));
const audioPackets = Number(env("AUDIO_PACKETS", "50"));
const timeoutMs = Number(env("TIMEOUT_MS", "30000"));
const screen = env("SCREEN", "0") === "1";
const moderate = env("MODERATE", "0") === "1";
const failover = env("FAILOVER", "0") === "1";
const speak = env("SPEAK", "0") === "1";
const quality = env("QUALITY", "0") === "1";
const resume = env("RESUME", "0") === "1";
const relay = env("RELAY", "0") === "1";
const breakPath = env("BREAK_PATH", "0") === "1";

// A steady 440 Hz tone at about -12 dBFS, one second (Chromium loops it).
function tone() {
  const rate = 48000, n = rate, data = Buffer.alloc(44 + n * 2);
  data.write("RIFF", 0); data.writeUInt32LE(36 + n * 2, 4); data.write("WAVEfmt ", 8);
  data.writeUInt32LE(16, 16); data.writeUInt16LE(1, 20); data.writeUInt16LE(1, 22);
  data.writeUInt32LE(rate, 24); data.writeUInt32LE(rate * 2, 28); data.writeUInt16LE(2, 32);
  data.writeUInt16LE(16, 34); data.write("data", 36); data.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(8000 * Math.sin(2 * Math.PI * 440 * i / rate)), 44 + i * 2);
  const path = join(tmpdir(), `arc-tone-${process.pid}.wav`);
  writeFileSync(path, data);
  return path;
}

const browser = await launchChromium(speak ? { audioFile: tone() } : {});
const room = env("ROOM", "");
// Without TOKENS, each page gets a development token itself (arc-control dev).
const count = tokens.length || names.length;
const result = { ok: false, pages: count, navigation: [] };
try {
  const pages = [];
  for (let i = 0; i < count; i++) {
    // One context per page: each is its own browser profile, as people are.
    const context = await browser.newContext();
    const page = await context.newPage();
    const fields = { name: names[i] ?? "", autojoin: "1" };
    if (relay) fields.relay = "1";
    if (tokens[i]) fields.token = tokens[i];
    if (room) fields.room = room;
    const q = new URLSearchParams(fields).toString();
    await open(page, `${base}/meet?${q}`, result.navigation);
    pages.push(page);
  }
  const started = Date.now();
  const seen = () => Promise.all(pages.map((p) => p.evaluate(async () => ({
    speakers: window.arc.speakers, spoke: Object.keys(window.arc.spoke), quality: window.arc.quality,
    state: window.arc.state, error: window.arc.error, me: window.arc.me?.identity, joins: window.arc.joins,
    told_at: window.arc.toldAt, joined_at: window.arc.joinedAt, marks: window.arc.marks,
    sid: window.arc.me?.sid, resumes: window.arc.resumes, departed: window.arc.departed, ice_restarts: window.arc.iceRestarts, connections: window.arc.connections(), notices: window.arc.notices,
    people: Object.keys(window.arc.people).length, stats: await window.arc.stats(), chat: window.arc.chat,
  }))));
  let views = [];
  let media = false;
  while (Date.now() - started < timeoutMs) {
    await pages[0].waitForTimeout(300);
    views = await seen();
    if (views.some((v) => v.error)) break;
    media = views.every((v) => Object.keys(v.stats).length === pages.length - 1
      && Object.values(v.stats).every((s) => s.frames >= frames && s.audio >= audioPackets));
    if (media) break;
  }
  result.media_ms = Date.now() - started;
  if (media) {
    const text = "hello from " + views[0].me;
    await pages[0].evaluate((t) => window.arc.say(t), text);
    let chatted = false;
    while (Date.now() - started < timeoutMs) {
      await pages[0].waitForTimeout(200);
      views = await seen();
      if (views.slice(1).every((v) => v.chat.some((c) => c.text === text && c.from === views[0].me))) {
        chatted = true;
        break;
      }
    }
    if (chatted && speak) {
      const everyone = views.map((v) => v.me);
      let all = false;
      while (Date.now() - started < timeoutMs) {
        await pages[0].waitForTimeout(200);
        views = await seen();
        if (views.every((v) => everyone.every((who) => v.spoke.includes(who)))) { all = true; break; }
      }
      result.everyone_spoke = all;
      if (all) {
        for (const p of pages.slice(1)) await p.click("#mic");
        while (Date.now() - started < timeoutMs) {
          await pages[0].waitForTimeout(200);
          views = await seen();
          if (views.every((v) => v.speakers.length === 1 && v.speakers[0] === everyone[0])) { result.one_speaker = true; break; }
        }
      }
    }
    if (chatted && quality) {
      const everyone = views.map((v) => v.me);
      while (Date.now() - started < timeoutMs) {
        await pages[0].waitForTimeout(200);
        views = await seen();
        if (views.every((v) => everyone.every((who) => who in v.quality))) { result.quality = views[0].quality; break; }
      }
      result.quality_ok = !!result.quality && views.every((v) => Object.values(v.quality).every((q) => q !== "poor"));
    }
    if (chatted && resume) {
      const before = views.map((v) => v);
      const dropped = Date.now();
      await pages[1].evaluate(() => window.arc.dropSocket());
      while (Date.now() - started < timeoutMs) {
        await pages[0].waitForTimeout(200);
        views = await seen();
        if (views[1].resumes === 1 && views[1].state === "joined") { result.resume_ms = Date.now() - dropped; break; }
      }
      // Media keeps flowing both ways: every page decodes more frames than before.
      await pages[0].waitForTimeout(1500);
      views = await seen();
      const grew = views.every((v, i) => Object.entries(v.stats).every(([k, s]) => s.frames > (before[i].stats[k]?.frames ?? 0) + 10));
      result.resumed = views[1].resumes === 1 && views[1].sid === before[1].sid && grew
        && views.every((v) => !v.departed.includes(before[1].me));
    }
    const spoken = (!speak || !!result.one_speaker) && (!quality || !!result.quality_ok) && (!resume || !!result.resumed);
    if (relay) {
      result.via = views.map((v) => Object.values(v.stats).map((s) => s.via));
      result.relayed = views.every((v) => Object.values(v.stats).every((s) => s.via === "relay"));
    }
    result.ok = chatted && spoken && (!relay || result.relayed) && !screen && !moderate && !failover && !breakPath;
    if (chatted && spoken && breakPath) {
      console.log(JSON.stringify({ phase: "media" }));
      await new Promise((resolve) => process.stdin.once("data", resolve));
      const broken = Date.now();
      const before = await seen();
      const back = (v, i) => v.ice_restarts >= 1 && v.state === "joined" && v.sid === before[i].sid
        && v.joins === before[i].joins && before.every((b) => !v.departed.includes(b.me))
        && Object.entries(before[i].stats).every(([k, s]) => (v.stats[k]?.frames ?? 0) >= s.frames + 10
          && (v.stats[k]?.audio ?? 0) >= s.audio + 10);
      const timeline = {};
      while (Date.now() - broken < timeoutMs) {
        await pages[0].waitForTimeout(100);
        views = await seen();
        views.forEach((v) => Object.entries(v.connections).forEach(([k, c]) => {
          const t = (timeline[v.me + ">" + k] ??= {});
          const at = Date.now() - broken;
          if (c.ice !== "connected" && !("down" in t)) t.down = at;
          if (c.restarts >= 1 && !("restarted" in t)) t.restarted = at;
          if (c.restarts >= 1 && c.ice === "connected" && !("up" in t)) t.up = at;
          const st = v.stats[k];
          if (st && !("media" in t) && st.frames >= (before[views.indexOf(v)].stats[k]?.frames ?? 0) + 3) t.media = at;
        }));
        result.timeline = timeline;
        if (views.every(back)) {
          result.restored_ms = Date.now() - broken;
          result.ice_restarted_ms = views.map((v) => (v.marks["ice restarted"] ?? broken) - broken);
          result.ok = true;
          break;
        }
      }
      process.stdin.destroy();
    }
    if (chatted && spoken && failover) {
      console.log(JSON.stringify({ phase: "media" }));
      await new Promise((resolve) => process.stdin.once("data", resolve));
      const told = Date.now();
      const back = (v) => v.joins >= 2 && v.state === "joined"
        && Object.keys(v.stats).length === pages.length - 1
        && Object.values(v.stats).every((s) => s.frames >= 5 && s.audio >= 5);
      while (Date.now() - told < timeoutMs) {
        await pages[0].waitForTimeout(100);
        views = await seen();
        if (views.every(back)) {
          result.failover_ms = Date.now() - told;
          // When each page was told to reconnect, and joined again (ms after the kill was announced).
          result.reconnect_ms = views.map((v) => (v.told_at ?? told) - told);
          result.rejoined_ms = views.map((v) => (v.joined_at ?? told) - told);
          result.ok = true;
          break;
        }
      }
      process.stdin.destroy();
    }
    if (chatted && spoken && screen) {
      // The first page shares a "screen" (an animated canvas: headless
      // Chromium has no screen picker); every other page receives it as a
      // separate video, then sees it go when the sharing stops.
      await pages[0].evaluate(() => {
        const canvas = document.createElement("canvas");
        canvas.width = 640; canvas.height = 360;
        const g = canvas.getContext("2d");
        let n = 0;
        setInterval(() => { g.fillStyle = `hsl(${(n += 7) % 360} 70% 50%)`; g.fillRect(0, 0, 640, 360); }, 50);
        return window.arc.shareStream(canvas.captureStream(15));
      });
      const key = views[0].me + "#screen";
      let shown = false;
      while (Date.now() - started < timeoutMs) {
        await pages[0].waitForTimeout(250);
        views = await seen();
        if (views.slice(1).every((v) => (v.stats[key]?.frames ?? 0) >= 10)) { shown = true; break; }
      }
      result.screen_ms = Date.now() - started;
      if (shown) {
        const shot = env("SCREENSHOT", "");
        if (shot) await pages[1].screenshot({ path: shot, fullPage: true });
        await pages[0].evaluate(() => window.arc.stopSharing());
        while (Date.now() - started < timeoutMs) {
          await pages[0].waitForTimeout(250);
          views = await seen();
          if (views.slice(1).every((v) => !(key in v.stats))) { result.screen_stopped = true; break; }
        }
      }
      result.ok = !!result.screen_stopped && !moderate;
    }
    if (moderate && spoken && (result.screen_stopped || !screen) && pages.length >= 3) {
      // The first page moderates (its token has the admin grant): it mutes
      // the second person, who is told, then removes the third, whom
      // everyone sees go.
      const [second, third] = [views[1].me, views[2].me];
      const restartsBefore = views.map((v) => v.ice_restarts);
      await pages[0].click(`button[data-mute="${second}"]`);
      let muted = false;
      while (Date.now() - started < timeoutMs) {
        await pages[0].waitForTimeout(200);
        if (await pages[1].evaluate(() => window.arc.mutedByModerator === true)) { muted = true; break; }
      }
      result.muted = muted;
      // The node stops the second person's tracks now: nobody's connection
      // may take that for a broken path (the SDK's stall watch would
      // restart a connection whose bytes stop for 2–3 s).
      await pages[0].waitForTimeout(4000);
      views = await seen();
      result.restarts_after_mute = views.map((v, i) => v.ice_restarts - restartsBefore[i]);
      if (muted && result.restarts_after_mute.some((n) => n !== 0)) {
        result.error = "a connection restarted its ICE after a moderator's mute: " + JSON.stringify(result.restarts_after_mute);
        muted = false;
      }
      if (muted) {
        await pages[0].click(`button[data-remove="${third}"]`);
        while (Date.now() - started < timeoutMs) {
          await pages[0].waitForTimeout(200);
          views = await seen();
          if (views[2].state === "removed" && views[0].people === 2 && views[1].people === 2) { result.ok = true; break; }
        }
      }
    }
  }
  result.elapsed_ms = Date.now() - started;
  result.views = views;
  const shot = env("SCREENSHOT", "");
  if (result.ok && shot) {
    if (!screen) await pages[0].screenshot({ path: shot, fullPage: true });
    result.screenshot = shot;
  }
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
