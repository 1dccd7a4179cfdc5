// The two pages of the simulcast tests (simulcast.mjs, bwe.mjs), through
// the SDK (/sdk/arc.js): the first publishes its fake camera at 960x540 as
// three layers (the SDK's default: 240x135, 480x270, 960x540), the second
// receives it and samples, every 100 ms, the frames it decoded and their
// width (`window.samples` on its page: { t, frames, width }). `browsers`:
// one browser for both pages, or [the publisher's, the receiver's].
import { open } from "./chromium.mjs";

export async function simulcastPair(browsers, base, pubToken, subToken, navigation) {
  const [pubBrowser, subBrowser] = Array.isArray(browsers) ? browsers : [browsers, browsers];
  const pages = [];
  for (const browser of [pubBrowser, subBrowser]) {
    const context = await browser.newContext({ bypassCSP: true });
    const page = await context.newPage();
    await open(page, `${base}/`, navigation);
    pages.push(page);
  }
  const [pub, sub] = pages;
  const capture = await pub.evaluate(async ({ base, token }) => {
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
    window.samples = [];
    const t0 = performance.now();
    setInterval(async () => {
      const s = Object.values(await window.room.stats())[0];
      if (s) window.samples.push({ t: Math.round(performance.now() - t0), frames: s.frames, width: s.width ?? 0 });
    }, 100);
  }, { base, token: subToken });

  // The layers the publisher sends now (frames went out since the last
  // look), smallest first: a browser turns layers off when its bandwidth
  // estimate is low and scales them down when its CPU is busy, so a test's
  // goal is a layer as it is sent at that moment, not a fixed size.
  let lastSent = new Map();
  async function active() {
    const layers = await pub.evaluate(() => window.room.sending());
    const live = layers.filter((l) => l.width > 0 && l.frames > (lastSent.get(l.rid) ?? 0));
    lastSent = new Map(layers.map((l) => [l.rid, l.frames]));
    return live.sort((a, b) => a.width - b.width);
  }
  return { pub, sub, capture, active };
}

// The longest time (ms) between newly decoded frames in `samples` (the
// receiver's, { t, frames }), counting the time from the last new frame to
// the last sample.
export function longestGap(samples) {
  let gap = 0, last = null;
  for (const s of samples) {
    if (last === null || s.frames > last.frames) {
      if (last !== null) gap = Math.max(gap, s.t - last.t);
      last = s;
    }
  }
  if (last !== null && samples.length) gap = Math.max(gap, samples.at(-1).t - last.t);
  return gap;
}
