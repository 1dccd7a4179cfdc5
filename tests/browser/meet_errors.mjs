// What the meeting page says when things go wrong, in headless Chromium:
// a refused token (TOKEN_BAD), a camera the person denies (TOKEN: the page
// joins; getUserMedia rejects with NotAllowedError as a denied prompt does
// — stubbed in the page, as headless Chromium has no prompt to deny — and
// the person can still chat), a moderator taking away another person's
// right to publish (TOKEN_PUB: that page publishes its camera; the test
// takes `publish` away through the REST API: the page says so, its share
// button is disabled, and its tracks end for everyone), and the room closed
// under them (the test closes it through the REST API with ADMIN_KEY).
// Prints one JSON line; exit code 0 when every message showed.
import { launchChromium, open } from "./chromium.mjs";

const env = (k, d) => process.env[k] ?? d;
const base = env("ARC_URL", "http://127.0.0.1:7880");
const timeoutMs = Number(env("TIMEOUT_MS", "20000"));
const browser = await launchChromium();
const result = { ok: false, navigation: [] };
// Whether `check` (async) came true within timeoutMs, polled every 100 ms.
const waitFor = async (check) => {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
};
const until = (page, f, arg) => waitFor(() => page.evaluate(f, arg));
try {
  // A refused token.
  const refusedPage = await (await browser.newContext()).newPage();
  await open(refusedPage, `${base}/meet?autojoin=1&token=${encodeURIComponent(env("TOKEN_BAD", "nope"))}`, result.navigation);
  result.refused = await until(refusedPage, () => window.arc.state === "disconnected");
  result.refused_text = await refusedPage.textContent("#notice");

  // A denied camera: the page joins anyway, says so, and chat works.
  const denied = await (await browser.newContext()).newPage();
  await denied.addInitScript(() => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
  });
  await open(denied, `${base}/meet?autojoin=1&name=Fay&token=${encodeURIComponent(env("TOKEN", ""))}`, result.navigation);
  result.joined = await until(denied, () => window.arc.state === "joined");
  result.denied = await until(denied, () => /denied/.test(window.arc.error ?? ""));
  result.denied_text = await denied.textContent("#notice");
  await denied.evaluate(() => window.arc.say("I can still type"));
  result.chat = await until(denied, () => window.arc.chat.some((c) => c.text === "I can still type"));

  // A moderator takes away another person's right to publish.
  const admin = { authorization: `Bearer ${env("ADMIN_KEY", "")}`, "content-type": "application/json" };
  const roomId = await denied.evaluate(() => window.arc.roomId);
  const pat = await (await browser.newContext()).newPage();
  await open(pat, `${base}/meet?autojoin=1&name=Pat&token=${encodeURIComponent(env("TOKEN_PUB", ""))}`, result.navigation);
  const patTracks = async () => {
    const list = await (await fetch(`${base}/v1/rooms/${roomId}/participants`, { headers: admin })).json();
    const p = (list.participants ?? []).find((p) => p.identity === "pat");
    return (p?.tracks ?? []).filter((t) => t.state === "published").length;
  };
  result.pat_published = await waitFor(async () => (await patTracks()) >= 2);
  const taken = await fetch(`${base}/v1/rooms/${roomId}/participants/pat/permissions`, {
    method: "PUT", headers: admin, body: JSON.stringify({ publish: false, subscribe: true, publish_data: true }),
  });
  result.permissions_status = taken.status;
  result.told = await until(pat, () => /took away your right to publish/.test(document.querySelector("#notice").textContent));
  result.share_disabled = await pat.evaluate(() => document.querySelector("#share").disabled);
  result.tracks_ended = await waitFor(async () => (await patTracks()) === 0);
  result.pat_still_there = await pat.evaluate(() => window.arc.state === "joined");

  // The room closes under them.
  const r = await fetch(`${base}/v1/rooms/${roomId}/close`, { method: "POST", headers: { authorization: `Bearer ${env("ADMIN_KEY", "")}` } });
  result.close_status = r.status;
  result.closed = await until(denied, () => window.arc.state === "closed");
  result.closed_text = await denied.textContent("#notice");
  result.ok = result.refused && /token was refused/.test(result.refused_text)
    && result.joined && result.denied && /camera or microphone was denied/.test(result.denied_text) && result.chat
    && result.pat_published && result.permissions_status === 200 && result.told && result.share_disabled
    && result.tracks_ended && result.pat_still_there
    && result.closed && /meeting ended/.test(result.closed_text);
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
