#!/usr/bin/python3
"""A third, independent WebRTC stack: GStreamer's webrtcbin (libnice ICE,
GStreamer's own RTP/SRTP; Debian's gstreamer1.0-plugins-bad, -nice and
python3-gst-1.0) as a WHIP publisher or a WHEP player.

ROLE=publish: sends a test pattern (VP8 or H.264) and a sine tone (Opus)
through WHIP and holds the session for HOLD_S seconds once ICE connected,
or until SIGTERM (then it succeeds if ICE had connected).
ROLE=play: plays the room through WHEP and decodes what arrives; done when
FRAMES video frames and AUDIO_BUFFERS audio buffers were decoded.

BUNDLE: webrtcbin's bundle-policy (max-bundle, max-compat, balanced).
Prints one JSON line: {"ok", "role", "bundle", "codec", "video_frames",
"audio_buffers", "state", "error", "offer_mlines", "answer"}; exits 0 on
success.

Environment: ARC_URL, ROOM, TOKEN, ROLE, BUNDLE, CODEC (VP8|H264),
FRAMES (30), AUDIO_BUFFERS (50), TIMEOUT_S (20), HOLD_S (10), DUMP_OFFER (a
path: the offer is written there).
"""
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402


def env(k, d):
    return os.environ.get(k, d)


BASE = env("ARC_URL", "http://127.0.0.1:7880")
ROOM = env("ROOM", "demo")
TOKEN = env("TOKEN", "")
ROLE = env("ROLE", "play")
BUNDLE = env("BUNDLE", "max-bundle")
CODEC = env("CODEC", "VP8").upper()
WANT_FRAMES = int(env("FRAMES", "30"))
WANT_AUDIO = int(env("AUDIO_BUFFERS", "50"))
TIMEOUT_S = float(env("TIMEOUT_S", "20"))
HOLD_S = float(env("HOLD_S", "10"))

VIDEO_CAPS = {
    "VP8": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "H264": "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
    "packetization-mode=(string)1,profile-level-id=(string)42e01f,level-asymmetry-allowed=(string)1",
}
AUDIO_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"
# What the publisher's payloaders produce (rtph264pay fills in the profile
# from the stream; a fixed profile-level-id here would not negotiate).
PUBLISH_VIDEO_CAPS = {
    "VP8": VIDEO_CAPS["VP8"],
    "H264": "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000",
}


def h264_encoder():
    if Gst.ElementFactory.find("x264enc"):
        return "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600"
    return "openh264enc complexity=low gop-size=30 bitrate=600000"


class Client:
    def __init__(self):
        self.result = {
            "ok": False, "role": ROLE, "bundle": BUNDLE, "codec": CODEC,
            "video_frames": 0, "audio_buffers": 0, "state": "new",
        }
        self.loop = GLib.MainLoop()
        self.lock = threading.Lock()
        self.connected_at = None
        self.started = time.monotonic()
        self.location = None
        if ROLE == "publish":
            video = (
                "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
                "! videoconvert ! queue ! "
                + ("vp8enc deadline=1 keyframe-max-dist=30 target-bitrate=600000 ! rtpvp8pay pt=96"
                   if CODEC == "VP8" else
                   h264_encoder() + " ! video/x-h264,profile=constrained-baseline ! h264parse "
                   "! rtph264pay config-interval=-1 pt=102 aggregate-mode=zero-latency")
                + f" ! {PUBLISH_VIDEO_CAPS[CODEC]} ! w."
            )
            audio = (
                "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue "
                f"! opusenc ! rtpopuspay pt=111 ! {AUDIO_CAPS} ! w."
            )
            desc = f"webrtcbin name=w bundle-policy={BUNDLE} {video} {audio}"
            self.pipe = Gst.parse_launch(desc)
            self.webrtc = self.pipe.get_by_name("w")
        else:
            self.pipe = Gst.Pipeline.new("play")
            self.webrtc = Gst.ElementFactory.make("webrtcbin", "w")
            self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.__enum_values__[
                {"none": 0, "balanced": 1, "max-compat": 2, "max-bundle": 3}[BUNDLE]])
            self.pipe.add(self.webrtc)
        if ROLE == "play":
            recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
            self.webrtc.emit("add-transceiver", recv, Gst.Caps.from_string(VIDEO_CAPS[CODEC]))
            self.webrtc.emit("add-transceiver", recv, Gst.Caps.from_string(AUDIO_CAPS))
            self.webrtc.connect("pad-added", self.on_pad)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::ice-connection-state", self.on_ice_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    # Negotiation: offer, gather every candidate, POST the whole offer.
    def on_negotiation_needed(self, _element):
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        self.webrtc.emit("create-offer", None, promise)

    def on_offer(self, promise, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, element, _pspec):
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self.post_offer)

    def post_offer(self):
        if self.location is not None:
            return False
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        self.result["offer_mlines"] = [l for l in offer.splitlines() if l.startswith("m=")]
        if env("DUMP_OFFER", ""):
            with open(env("DUMP_OFFER", ""), "w") as f:
                f.write(offer)
        path = "whip" if ROLE == "publish" else "whep"
        req = urllib.request.Request(
            f"{BASE}/v1/{path}/{ROOM}", data=offer.encode(), method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"},
        )
        try:
            resp = urllib.request.urlopen(req, timeout=15)
        except urllib.error.HTTPError as e:
            self.result["error"] = f"HTTP {e.code}: {e.read().decode(errors='replace')}"
            self.finish()
            return False
        except Exception as e:  # noqa: BLE001 - any failure is reported
            self.result["error"] = f"POST failed: {e}"
            self.finish()
            return False
        self.location = resp.headers.get("Location") or ""
        answer = resp.read().decode()
        self.result["answer"] = [l for l in answer.splitlines() if l.startswith(("m=", "a=group", "a=mid", "a=send", "a=recv", "a=inactive"))]
        ok, sdp = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            self.result["error"] = "unparsable answer"
            self.finish()
            return False
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        self.webrtc.emit("set-remote-description", desc, Gst.Promise.new())
        return False

    def on_ice_state(self, element, _pspec):
        state = element.get_property("ice-connection-state")
        self.result["state"] = state.value_nick
        if state in (GstWebRTC.WebRTCICEConnectionState.CONNECTED, GstWebRTC.WebRTCICEConnectionState.COMPLETED):
            if self.connected_at is None:
                self.connected_at = time.monotonic()
                if ROLE == "publish":
                    # Tell whoever waits that media is flowing now.
                    print(json.dumps({"connected": True}), flush=True)

    # Playing: decode whatever arrives, count video frames and audio buffers.
    def on_pad(self, _element, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_decoded(self, _decodebin, pad):
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name()
        kind = "video_frames" if name.startswith("video") else "audio_buffers"
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        sink.set_property("signal-handoffs", True)
        sink.connect("handoff", lambda *_: self.count(kind))
        queue = Gst.ElementFactory.make("queue")
        self.pipe.add(queue)
        self.pipe.add(sink)
        queue.link(sink)
        queue.sync_state_with_parent()
        sink.sync_state_with_parent()
        pad.link(queue.get_static_pad("sink"))

    def count(self, kind):
        with self.lock:
            self.result[kind] += 1

    def on_error(self, _bus, message):
        err, debug = message.parse_error()
        self.result["error"] = f"{err.message} ({debug})"
        self.finish()

    def tick(self):
        elapsed = time.monotonic() - self.started
        if ROLE == "play":
            with self.lock:
                done = self.result["video_frames"] >= WANT_FRAMES and self.result["audio_buffers"] >= WANT_AUDIO
            if done:
                self.result["ok"] = True
                self.finish()
                return False
        elif self.connected_at is not None and time.monotonic() - self.connected_at >= HOLD_S:
            self.result["ok"] = True
            self.finish()
            return False
        if elapsed > TIMEOUT_S + (HOLD_S if ROLE == "publish" else 0):
            self.result.setdefault("error", f"timed out after {TIMEOUT_S} s")
            self.finish()
            return False
        return True

    def finish(self):
        self.result["elapsed_s"] = round(time.monotonic() - self.started, 2)
        self.loop.quit()

    def on_term(self):
        if ROLE == "publish" and self.connected_at is not None:
            self.result["ok"] = True
        else:
            self.result.setdefault("error", "stopped (SIGTERM) before it was done")
        self.finish()
        return False

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(100, self.tick)
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, self.on_term)
        self.loop.run()
        if self.location:
            try:
                req = urllib.request.Request(
                    f"{BASE}{self.location}", method="DELETE", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                urllib.request.urlopen(req, timeout=5).read()
            except Exception as e:  # noqa: BLE001
                self.result["delete_error"] = str(e)
        self.pipe.set_state(Gst.State.NULL)
        print(json.dumps(self.result), flush=True)
        return 0 if self.result["ok"] else 1


if __name__ == "__main__":
    Gst.init(None)
    sys.exit(Client().run())
