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
// mutes the second person and removes the third), SCREENSHOT (a PNG path: on success, a picture of the first page, or
// with SCREEN of the second page while the screen is shared).
import { launchChromium } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const tokens = env("TOKENS", "").split(",").filter(Boolean);
const names = env("NAMES", "").split(",");
const frames = Number(env("FRAMES", "30"));
const audioPackets = Number(env("AUDIO_PACKETS", "50"));
const timeoutMs = Number(env("TIMEOUT_MS", "30000"));
const screen = env("SCREEN", "0") === "1";
const moderate = env("MODERATE", "0") === "1";

const browser = await launchChromium();
const room = env("ROOM", "");
// Without TOKENS, each page gets a development token itself (arc-control dev).
const count = tokens.length || names.length;
const result = { ok: false, pages: count };
try {
  const pages = [];
  for (let i = 0; i < count; i++) {
    // One context per page: each is its own browser profile, as people are.
    const context = await browser.newContext();
    const page = await context.newPage();
    const fields = { name: names[i] ?? "", autojoin: "1" };
    if (tokens[i]) fields.token = tokens[i];
    if (room) fields.room = room;
    const q = new URLSearchParams(fields).toString();
    await page.goto(`${base}/meet?${q}`);
    pages.push(page);
  }
  const started = Date.now();
  const seen = () => Promise.all(pages.map((p) => p.evaluate(async () => ({
    state: window.arc.state, error: window.arc.error, me: window.arc.me?.identity,
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
    result.ok = chatted && !screen && !moderate;
    if (chatted && screen) {
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
    if (moderate && (result.screen_stopped || !screen) && pages.length >= 3) {
      // The first page moderates (its token has the admin grant): it mutes
      // the second person, who is told, then removes the third, whom
      // everyone sees go.
      const [second, third] = [views[1].me, views[2].me];
      await pages[0].click(`button[data-mute="${second}"]`);
      let muted = false;
      while (Date.now() - started < timeoutMs) {
        await pages[0].waitForTimeout(200);
        if (await pages[1].evaluate(() => window.arc.mutedByModerator === true)) { muted = true; break; }
      }
      result.muted = muted;
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
