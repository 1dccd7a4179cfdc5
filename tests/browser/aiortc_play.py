#!/usr/bin/python3
"""A second, independent WebRTC stack (aiortc, Debian's python3-aiortc) plays a
room through WHEP and decodes what arrives.

Prints one JSON line: {"ok", "video_frames", "audio_frames", "codec", ...};
exits 0 when at least FRAMES video frames and AUDIO_FRAMES audio frames were
decoded within TIMEOUT_S.

Environment: ARC_URL, ROOM, SUB_TOKEN, FRAMES (30), AUDIO_FRAMES (50), TIMEOUT_S (20).
"""
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


def env(k, d):
    return os.environ.get(k, d)


async def count(track, counts, key):
    while True:
        try:
            await track.recv()
        except Exception:
            return
        counts[key] += 1


async def main():
    base = env("ARC_URL", "http://127.0.0.1:7880")
    room = env("ROOM", "demo")
    token = env("SUB_TOKEN", "")
    want_video = int(env("FRAMES", "30"))
    want_audio = int(env("AUDIO_FRAMES", "50"))
    timeout = float(env("TIMEOUT_S", "20"))
    result = {"ok": False, "client": "aiortc", "video_frames": 0, "audio_frames": 0}
    counts = {"video_frames": 0, "audio_frames": 0}
    tasks, pcs, locations = [], [], []
    loop = asyncio.get_running_loop()
    try:
        # One WHEP session with an audio and a video m-line. Debian's aiortc
        # 1.4 may not bundle them: then each m-line has its own ICE/DTLS
        # transport, and the node answers each with a peer connection of its
        # own (and one identity keeps one session in the room).
        pc = RTCPeerConnection()
        pcs.append(pc)

        @pc.on("track")
        def on_track(track):
            key = "video_frames" if track.kind == "video" else "audio_frames"
            tasks.append(asyncio.ensure_future(count(track, counts, key)))

        for kind in ("video", "audio"):
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        result["bundled"] = "a=group:BUNDLE" in offer
        req = urllib.request.Request(
            f"{base}/v1/whep/{room}",
            data=offer.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
        )
        resp = await loop.run_in_executor(None, lambda: urllib.request.urlopen(req, timeout=10))
        answer = resp.read().decode()
        locations.append(resp.headers.get("Location"))
        kind = None
        for line in answer.splitlines():
            if line.startswith("m="):
                kind = line[2:].split()[0]
            if line.startswith("a=rtpmap:") and "rtx" not in line.lower() and kind:
                result.setdefault(kind + "_codec", line.split()[1].split("/")[0])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            await asyncio.sleep(0.25)
            if counts["video_frames"] >= want_video and counts["audio_frames"] >= want_audio:
                result["ok"] = True
                break
        result["elapsed_s"] = round(time.monotonic() - started, 2)
    except urllib.error.HTTPError as e:
        result["error"] = f"HTTP {e.code}: {e.read().decode(errors='replace')}"
    except Exception as e:  # report, never hang
        result["error"] = repr(e)
    result.update(counts)
    result["connection"] = [pc.connectionState for pc in pcs]
    for location in filter(None, locations):
        try:
            delete = urllib.request.Request(base + location, method="DELETE", headers={"Authorization": f"Bearer {token}"})
            urllib.request.urlopen(delete, timeout=5)
        except Exception as e:
            result["delete_error"] = repr(e)
    for t in tasks:
        t.cancel()
    for pc in pcs:
        await pc.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
