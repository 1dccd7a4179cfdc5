// Debian's Chromium, headless, with a fake camera and microphone and no
// permission prompts: how every browser test of Arc starts it
// (CHROMIUM names another binary). `audioFile`: a WAV file the fake
// microphone plays in a loop (else Chromium's own, a short beep a second).
// `netns`: a network namespace (a test's, see control/tests/common's
// `Netns`) to run this browser in while the script and its other browsers
// stay outside (through a wrapper: `ip netns exec`, which needs root).
import { chromium } from "playwright-core";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function launchChromium({ audioFile, netns } = {}) {
  const binary = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (netns) {
    if (!/^[A-Za-z0-9_.-]+$/.test(netns)) throw new Error(`not a namespace name: ${netns}`);
    const dir = mkdtempSync(join(tmpdir(), "arc-chromium-"));
    const wrapper = join(dir, "chromium");
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${netns} "${binary}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    try {
      return await launch(wrapper, audioFile);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return launch(binary, audioFile);
}

function launch(executablePath, audioFile) {
  const audio = audioFile ? [`--use-file-for-fake-audio-capture=${audioFile}`] : [];
  // Camera and microphone need a secure context: loopback is one, an
  // arc-control on another address of this machine (a test's network
  // namespace reaching it over a veth) is made one for this browser.
  const base = process.env.ARC_URL ? new URL(process.env.ARC_URL) : null;
  const secure = base && base.protocol === "http:" && !["127.0.0.1", "localhost", "[::1]"].includes(base.hostname)
    ? [`--unsafely-treat-insecure-origin-as-secure=${base.origin}`] : [];
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--autoplay-policy=no-user-gesture-required",
      ...audio, ...secure,
    ],
  });
}

// Opens `url` in `page` and waits until its document is parsed (its scripts
// ran), not for its load event: a page whose <video> has a MediaStream as
// srcObject before the load event delays that event until the stream has
// a frame (the HTML media element's "delaying-the-load-event flag"), so
// /play and /meet got no load event while their media was slow to come,
// or never, when the media failed (seen in full CI runs on a loaded 2-core
// machine, and always with a player whose WHEP request was refused). A
// navigation that does not get that far in 20 s is tried once more, and what
// happened is pushed to `log` (the result's `navigation`), with any crash
// of the page's renderer.
export async function open(page, url, log = []) {
  const path = url.split("?")[0];
  page.on("crash", () => log.push({ path, crash: true, at: Date.now() }));
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    try {
      const response = await page.goto(url, { timeout: 20000, waitUntil: "domcontentloaded" });
      if (attempt > 1) log.push({ path, attempt, status: response?.status() ?? null, ms: Date.now() - started });
      return response;
    } catch (e) {
      log.push({ path, attempt, ms: Date.now() - started, error: String(e).split("\n")[0] });
      if (attempt >= 2) throw e;
    }
  }
}
