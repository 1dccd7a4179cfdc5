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
