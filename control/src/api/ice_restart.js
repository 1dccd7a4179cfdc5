// ICE restart for a WHIP/WHEP session (RFC 9725 §4.3.2), shared by /publish
// and /play: when the connection's ICE fails (or stays disconnected for
// half a second; again 5 s later if it is not connected then) the page makes an offer with new ICE credentials, PATCHes them to its
// session (If-Match: *), and takes the node's new credentials from the
// answer fragment into its answer. The session, its DTLS and its tracks
// stay: nothing leaves or joins the room.
//
// arcIceRestart(pc, resource, token, report) watches `pc` and answers a
// function that restarts at once (restart(why)); `resource()` and `token()`
// give the session URL and the bearer token, `report(what)` hears
// { restarting }, { restarted, etag } and { error }.
"use strict";
window.arcIceRestart = function (pc, resource, token, report) {
  let busy = false, timer = null, retry = null;
  const value = (sdp, name) => (sdp.match(new RegExp("a=" + name + ":([^\\r\\n]*)")) || [])[1];
  async function restart(why) {
    if (busy || !resource() || pc.signalingState !== "stable") return;
    busy = true;
    try {
      report({ restarting: why });
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer());
      const offer = pc.localDescription.sdp;
      const frag = "a=ice-ufrag:" + value(offer, "ice-ufrag") + "\r\na=ice-pwd:" + value(offer, "ice-pwd") + "\r\n";
      const res = await fetch(resource(), {
        method: "PATCH", body: frag,
        headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*", "Authorization": "Bearer " + token() },
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error("ICE restart: PATCH answered " + res.status + ": " + text);
      const ufrag = value(text, "ice-ufrag"), pwd = value(text, "ice-pwd");
      if (!ufrag || !pwd) throw new Error("ICE restart: the answer fragment has no credentials");
      const answer = pc.currentRemoteDescription.sdp
        .replace(/a=ice-ufrag:[^\r\n]*/g, "a=ice-ufrag:" + ufrag)
        .replace(/a=ice-pwd:[^\r\n]*/g, "a=ice-pwd:" + pwd);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      report({ restarted: why, etag: res.headers.get("ETag") });
    } catch (e) {
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      report({ error: String(e) });
    } finally {
      busy = false;
    }
    clearTimeout(retry);
    retry = setTimeout(() => {
      if (["disconnected", "failed", "checking"].includes(pc.iceConnectionState)) restart("retry");
    }, 5000);
  }
  pc.addEventListener("iceconnectionstatechange", () => {
    clearTimeout(timer);
    if (pc.iceConnectionState === "failed") restart("failed");
    else if (pc.iceConnectionState === "disconnected") {
      timer = setTimeout(() => { if (pc.iceConnectionState === "disconnected") restart("disconnected"); }, 500);
    }
  });
  return restart;
};
