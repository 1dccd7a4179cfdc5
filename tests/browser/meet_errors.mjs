// What the meeting page says when things go wrong, in headless Chromium:
// a refused token (TOKEN_BAD), a camera the person denies (TOKEN: the page
// joins; getUserMedia rejects with NotAllowedError as a denied prompt does
// — stubbed in the page, as headless Chromium has no prompt to deny — and
// the person can still chat), and the room closed under them (the test
// closes it through the REST API with ADMIN_KEY). Prints one JSON line; exit
// code 0 when every message showed.
import { launchChromium } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const timeoutMs = Number(env("TIMEOUT_MS", "20000"));
const browser = await launchChromium();
const result = { ok: false };
const until = async (page, f, arg) => {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await page.evaluate(f, arg)) return true;
    await page.waitForTimeout(100);
  }
  return false;
};
try {
  // A refused token.
  const refusedPage = await (await browser.newContext()).newPage();
  await refusedPage.goto(`${base}/meet?autojoin=1&token=${encodeURIComponent(env("TOKEN_BAD", "nope"))}`);
  result.refused = await until(refusedPage, () => window.arc.state === "disconnected");
  result.refused_text = await refusedPage.textContent("#notice");

  // A denied camera: the page joins anyway, says so, and chat works.
  const denied = await (await browser.newContext()).newPage();
  await denied.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
  });
  await denied.goto(`${base}/meet?autojoin=1&name=Fay&token=${encodeURIComponent(env("TOKEN", ""))}`);
  result.joined = await until(denied, () => window.arc.state === "joined");
  result.denied = await until(denied, () => /denied/.test(window.arc.error ?? ""));
  result.denied_text = await denied.textContent("#notice");
  await denied.evaluate(() => window.arc.say("I can still type"));
  result.chat = await until(denied, () => window.arc.chat.some((c) => c.text === "I can still type"));

  // The room closes under them.
  const roomId = await denied.evaluate(() => window.arc.roomId);
  const r = await fetch(`${base}/v1/rooms/${roomId}/close`, { method: "POST", headers: { authorization: `Bearer ${env("ADMIN_KEY", "")}` } });
  result.close_status = r.status;
  result.closed = await until(denied, () => window.arc.state === "closed");
  result.closed_text = await denied.textContent("#notice");
  result.ok = result.refused && /token was refused/.test(result.refused_text)
    && result.joined && result.denied && /camera or microphone was denied/.test(result.denied_text) && result.chat
    && result.closed && /meeting ended/.test(result.closed_text);
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
