// Debian's Chromium, headless, with a fake camera and microphone and no
// permission prompts: how every browser test of Arc starts it
// (CHROMIUM names another binary). `audioFile`: a WAV file the fake
// microphone plays in a loop (else Chromium's own, a short beep a second).
import { chromium } from "playwright-core";

export function launchChromium({ audioFile } = {}) {
  const audio = audioFile ? [`--use-file-for-fake-audio-capture=${audioFile}`] : [];
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--autoplay-policy=no-user-gesture-required",
      ...audio,
    ],
  });
}

// Opens `url` in `page` and waits for its load event. Twice in full CI runs
// on a loaded 2-core machine a page of arc-control's (/play, /meet) got no
// load event within Playwright's 30 s — the page itself has no
// subresources, and the same page loaded at once in every other run. So a
// navigation without a load event in 20 s is tried once more, and what
// happened is pushed to `log` (the result's `navigation`), with any crash
// of the page's renderer, so that the next time says more than a timeout.
export async function open(page, url, log = []) {
  const path = url.split("?")[0];
  page.on("crash", () => log.push({ path, crash: true, at: Date.now() }));
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    try {
      const response = await page.goto(url, { timeout: 20000 });
      if (attempt > 1) log.push({ path, attempt, status: response?.status() ?? null, ms: Date.now() - started });
      return response;
    } catch (e) {
      log.push({ path, attempt, ms: Date.now() - started, error: String(e).split("\n")[0] });
      if (attempt >= 2) throw e;
    }
  }
}
