// src/arc.ts
var STALL_POLL_MS = 1e3;
var STALL_POLLS = 2;
var FLOWING_BYTES = 200;
var ICE_DISCONNECTED_RESTART_MS = 500;
var ICE_RESTART_RETRY_MS = 5e3;
var ArcError = class extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
  code;
};
var Room = class _Room {
  state = "connecting";
  room = null;
  me = null;
  moderator = false;
  /** Everyone else, by sid. */
  participants = /* @__PURE__ */ new Map();
  ws = null;
  nextId = 1;
  pending = /* @__PURE__ */ new Map();
  handlers = /* @__PURE__ */ new Map();
  subs = /* @__PURE__ */ new Map();
  /** Received videos' preferences by key (identity or identity#screen), kept across reconnections. */
  preferences = /* @__PURE__ */ new Map();
  publisher = null;
  screen = null;
  local = null;
  resumeToken = "";
  attempts = 0;
  autoSubscribe;
  maxAttempts;
  iceTransportPolicy;
  simulcast;
  red;
  /** The STUN/TURN servers of the last join (TURN with this participant's credentials). */
  iceServers = [];
  ping = null;
  stallWatch = null;
  firstJoin = null;
  /** A room to join with `token` on the arc-control at `url` (e.g. `location.origin`); listen, then `connect()`. */
  constructor(url, token, options = {}) {
    this.url = url.replace(/\/+$/, "");
    this.token = token;
    this.autoSubscribe = options.autoSubscribe ?? true;
    this.maxAttempts = options.reconnectAttempts ?? 6;
    this.iceTransportPolicy = options.iceTransportPolicy ?? "all";
    this.simulcast = options.simulcast ?? true;
    this.red = options.red ?? true;
  }
  peerConnection() {
    return new RTCPeerConnection({
      bundlePolicy: "max-bundle",
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy
    });
  }
  url;
  token;
  /**
   * Joins the token's room; resolves once joined, rejects when the token is
   * refused (expired, revoked, no join grant) or the room is full.
   */
  connect() {
    if (this.firstJoin || this.ws) return Promise.reject(new ArcError("invalid", "connect() once per room"));
    return new Promise((resolve, reject) => {
      this.firstJoin = { resolve, reject };
      this.open();
      this.ping = setInterval(() => this.send({ type: "ping" }), 5e3);
      this.stallWatch = setInterval(() => void this.watchStalls(), STALL_POLL_MS);
    });
  }
  /** `new Room(url, token, options)` and `connect()`, in one (the first `joined` is not seen by listeners added after). */
  static async connect(url, token, options = {}) {
    const room = new _Room(url, token, options);
    await room.connect();
    return room;
  }
  /** Listens; returns the function that stops listening. */
  on(event, handler) {
    let set = this.handlers.get(event);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return () => this.off(event, handler);
  }
  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
  }
  // ---- publishing ------------------------------------------------------
  /** Publishes the camera and microphone (asks the browser for them unless `stream` is given). */
  async publishCamera(stream) {
    this.local = stream ?? await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    await this.publishLocal();
  }
  /** Publishes the microphone alone (or adds it to the camera already published). */
  async publishMicrophone() {
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const tracks = [...this.local?.getVideoTracks() ?? [], ...mic.getAudioTracks()];
    this.local = new MediaStream(tracks);
    await this.publishLocal();
  }
  /** The camera and microphone stream this participant publishes. */
  get localStream() {
    return this.local;
  }
  /** Turns the published microphone (or camera) on or off; off sends silence (black). */
  setMicrophoneEnabled(on) {
    for (const t of this.local?.getAudioTracks() ?? []) t.enabled = on;
  }
  setCameraEnabled(on) {
    for (const t of this.local?.getVideoTracks() ?? []) t.enabled = on;
  }
  /** Shares a screen (the browser asks which unless `stream` is given) as its own tracks. */
  async publishScreen(stream) {
    if (this.screen) return;
    const s = stream ?? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
    for (const t of s.getTracks()) t.addEventListener("ended", () => this.stopScreen());
    this.screen = await this.openLeg(s, true);
    this.screen.reopen = () => {
      const old = this.screen;
      if (!old) return;
      this.screen = null;
      old.pc.close();
      void this.openLeg(old.stream, true).then((leg) => {
        leg.reopen = old.reopen;
        this.screen = leg;
      });
    };
  }
  /** Stops sharing the screen. */
  stopScreen() {
    this.closeScreen(true);
  }
  // Ends the screen share; `tell`: ask the server to close its session
  // (not when the server ended it, or the socket is gone).
  closeScreen(tell) {
    const leg = this.screen;
    if (!leg) return;
    this.screen = null;
    if (tell && leg.session) this.send({ type: "close_media", session_id: leg.session });
    leg.pc.close();
    for (const t of leg.stream.getTracks()) t.stop();
  }
  // Ends what this participant publishes, without asking the server (it ended it, or the socket is gone).
  closePublishing() {
    this.publisher?.pc.close();
    this.publisher = null;
    this.closeScreen(false);
  }
  get sharing() {
    return this.screen?.stream ?? null;
  }
  // ---- receiving -------------------------------------------------------
  /** Receives `identity`'s camera and microphone (or its screen). */
  async subscribe(identity, options = {}) {
    const p = [...this.participants.values()].find((x) => x.identity === identity);
    if (p) await this.receive(p, options.screen ?? false);
  }
  /**
   * What to receive of `identity`'s camera (or screen), when it publishes
   * simulcast layers: at most `quality`, and no larger than needed for the
   * size it is shown at (`width` × `height`, in pixels). Kept across
   * reconnections; the server moves to that layer at its next keyframe.
   */
  setPreferredQuality(identity, preference, options = {}) {
    const key = options.screen ? identity + "#screen" : identity;
    this.preferences.set(key, preference);
    const leg = this.subs.get(key);
    if (!leg) return;
    leg.preference = preference;
    this.tellPreference(leg);
  }
  tellPreference(leg) {
    const p = leg.preference;
    if (!p || !leg.session) return;
    const size = p.width && p.height ? { width: Math.round(p.width), height: Math.round(p.height) } : {};
    this.send({ type: "set_preferred_quality", session_id: leg.session, quality: p.quality ?? "high", ...size });
  }
  /** Stops receiving it. */
  unsubscribe(identity, options = {}) {
    this.dropSub(options.screen ? identity + "#screen" : identity, true);
  }
  /**
   * What each received stream decoded so far, by key (identity or
   * identity#screen): video frames, audio packets, the kind of this side's
   * ICE candidate its media uses (`host`, `srflx`, `relay`: TURN), and the
   * size of the last video frame (which simulcast layer arrives).
   */
  async stats() {
    const out = {};
    for (const [key, { pc }] of this.subs) {
      let frames = 0;
      let audio = 0;
      let width;
      let height;
      let pair;
      const reports = await pc.getStats();
      reports.forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          frames += r.framesDecoded ?? 0;
          width = r.frameWidth ?? width;
          height = r.frameHeight ?? height;
        }
        if (r.type === "inbound-rtp" && r.kind === "audio") audio += r.packetsReceived ?? 0;
        if (r.type === "transport" && r.selectedCandidatePairId) pair = r.selectedCandidatePairId;
      });
      const local = pair ? reports.get(reports.get(pair)?.localCandidateId) : void 0;
      out[key] = { frames, audio, via: local?.candidateType, width, height };
    }
    return out;
  }
  /**
   * What the camera connection sends: one entry per video layer (its rid
   * when simulcast, the size of its last frame, frames sent so far). A
   * browser turns layers off when its bandwidth estimate is low and scales
   * them down when its CPU is busy; this says what goes out now.
   */
  async sending() {
    if (!this.publisher) return [];
    const out = [];
    const paused = /* @__PURE__ */ new Set();
    for (const t of this.publisher.pc.getTransceivers()) {
      for (const e of t.sender.getParameters().encodings ?? []) if (e.rid && e.active === false) paused.add(e.rid);
    }
    (await this.publisher.pc.getStats()).forEach((r) => {
      if (r.type === "outbound-rtp" && r.kind === "video") {
        const active = !(r.rid && paused.has(r.rid));
        out.push({ rid: r.rid, width: r.frameWidth, height: r.frameHeight, frames: r.framesSent ?? 0, active });
      }
    });
    return out;
  }
  /**
   * Each connection's ICE state (`new`, `checking`, `connected`, `disconnected`,
   * `failed` …) and ICE restarts, by what it carries: `camera`, `screen`, or a
   * received stream's key.
   */
  connections() {
    const out = {};
    const one = (leg) => leg && { ice: leg.pc.iceConnectionState, restarts: leg.restarts ?? 0 };
    if (this.publisher) out.camera = one(this.publisher);
    if (this.screen) out.screen = one(this.screen);
    for (const [key, leg] of this.subs) out[key] = one(leg);
    return out;
  }
  // ---- talking and moderating -------------------------------------------
  /** A data message to everyone else, or to the listed identities (needs `publish_data`). */
  sendData(payload, options = {}) {
    this.send({ type: "data", payload, to: options.to, topic: options.topic });
  }
  /** Sets this participant's name and/or metadata. */
  updateMetadata(change) {
    this.send({ type: "update_metadata", ...change });
  }
  /** Moderation (the token's `admin` grant): mute or unmute another's track. */
  muteTrack(trackId, muted) {
    this.send({ type: "mute_track", track_id: trackId, muted });
  }
  removeParticipant(identity) {
    this.send({ type: "remove_participant", identity });
  }
  updatePermissions(identity, permissions) {
    this.send({ type: "update_permissions", identity, permissions });
  }
  closeRoom() {
    this.send({ type: "close_room" });
  }
  /** Leaves the room: everything stops. */
  leave() {
    if (this.state === "disconnected") return;
    this.send({ type: "leave" });
    this.finish("left", "You left the meeting.");
  }
  /** For tests: drops the socket as a network change would (no `leave`). */
  dropSocket() {
    this.ws?.close(4e3, "dropped");
  }
  // ---- internals -------------------------------------------------------
  emit(event, value) {
    for (const h of this.handlers.get(event) ?? []) {
      try {
        h(value);
      } catch (e) {
        console.error(e);
      }
    }
  }
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ v: 1, ...msg }));
  }
  request(msg) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ ...msg, id });
    });
  }
  open() {
    const base = this.url.replace(/^http/, "ws");
    const resume = this.resumeToken ? "&resume=" + encodeURIComponent(this.resumeToken) : "";
    const socket = new WebSocket(base + "/v1/rtc?access_token=" + encodeURIComponent(this.token) + resume);
    this.ws = socket;
    socket.onmessage = (e) => {
      try {
        this.onMessage(JSON.parse(String(e.data)));
      } catch (err) {
        console.error(err);
      }
    };
    socket.onclose = () => {
      if (this.ws !== socket) return;
      switch (this.state) {
        case "reconnecting":
          this.retry();
          break;
        case "joined":
          this.state = "reconnecting";
          this.emit("reconnecting", { reason: "socket" });
          this.retry();
          break;
        case "connecting":
          this.finish(
            "refused",
            "Could not join: the token was refused (expired, revoked, no join grant) or the room is full."
          );
          break;
        case "disconnected":
          break;
      }
    };
  }
  // Joins again: at once, then backing off (0.5, 1, 2, 4, 4 s).
  retry() {
    this.attempts += 1;
    if (this.attempts > this.maxAttempts) {
      this.finish("lost", "The connection to the server was lost.");
      return;
    }
    const delay = this.attempts === 1 ? 0 : Math.min(500 * 2 ** (this.attempts - 2), 4e3);
    setTimeout(() => {
      if (this.state === "reconnecting") this.open();
    }, delay);
  }
  // The room is over for this participant.
  finish(reason, message) {
    if (this.state === "disconnected") return;
    this.state = "disconnected";
    if (this.ping) clearInterval(this.ping);
    if (this.stallWatch) clearInterval(this.stallWatch);
    this.teardown(true);
    for (const t of this.local?.getTracks() ?? []) t.stop();
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.firstJoin?.reject(new ArcError(reason, message));
    this.firstJoin = null;
    this.emit("disconnected", { reason, message });
  }
  // Drops every connection (the socket is gone or going: nothing is sent),
  // keeping the camera and microphone unless `all`.
  teardown(all = false) {
    for (const key of [...this.subs.keys()]) this.dropSub(key, false);
    this.closePublishing();
    for (const p of this.pending.values()) p.reject(new ArcError("reconnecting", "the room is reconnecting"));
    this.pending.clear();
    this.participants.clear();
    if (all) this.local = null;
  }
  dropSub(key, tell) {
    const s = this.subs.get(key);
    if (!s) return;
    this.subs.delete(key);
    clearTimeout(s.iceTimer);
    clearTimeout(s.retryTimer);
    s.pc.close();
    if (tell && s.session) this.send({ type: "close_media", session_id: s.session });
    this.emit("remoteStreamEnded", { key });
  }
  // A connection whose ICE failed, or stayed disconnected for half a second,
  // or whose received bytes stalled (the stall watch), restarts its ICE on the same session (new credentials both ways, over
  // the socket); while the socket is away, once it is back. One not
  // connected again 5 s later restarts again; one whose session the node
  // no longer has is opened afresh.
  watchIce(leg) {
    leg.pc.addEventListener("iceconnectionstatechange", () => {
      clearTimeout(leg.iceTimer);
      const state = leg.pc.iceConnectionState;
      if (state === "failed") void this.restartIce(leg, "failed");
      else if (state === "disconnected") {
        leg.iceTimer = setTimeout(() => {
          if (leg.pc.iceConnectionState === "disconnected") void this.restartIce(leg, "disconnected");
        }, ICE_DISCONNECTED_RESTART_MS);
      }
    });
  }
  async restartIce(leg, reason) {
    const pc = leg.pc;
    if (leg.restarting || !leg.session || pc.signalingState !== "stable" || pc.connectionState === "closed") return;
    if (this.state !== "joined") {
      leg.restartWanted = true;
      return;
    }
    leg.restarting = true;
    leg.restartWanted = false;
    try {
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer());
      const offer = pc.localDescription?.sdp ?? "";
      const value = (sdp, name) => sdp.match(new RegExp("a=" + name + ":([^\\r\\n]*)"))?.[1] ?? "";
      const m = await this.request({
        type: "restart_ice",
        session_id: leg.session,
        ufrag: value(offer, "ice-ufrag"),
        pwd: value(offer, "ice-pwd")
      });
      const answer = (pc.currentRemoteDescription?.sdp ?? "").replace(/a=ice-ufrag:[^\r\n]*/g, "a=ice-ufrag:" + m.ufrag).replace(/a=ice-pwd:[^\r\n]*/g, "a=ice-pwd:" + m.pwd);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      leg.restarts = (leg.restarts ?? 0) + 1;
      this.emit("iceRestarted", { session: leg.session, reason });
    } catch (e) {
      if (pc.signalingState === "have-local-offer") {
        await pc.setLocalDescription({ type: "rollback" }).catch(() => {
        });
      }
      if (e instanceof ArcError && e.code === "reconnecting") leg.restartWanted = true;
      else if (e instanceof ArcError && (e.code === "session_not_found" || e.code === "ice_restart_unsupported") && leg.reopen) {
        leg.restarting = false;
        leg.reopen();
        return;
      } else if (pc.connectionState !== "closed") this.emit("notice", { code: "ice_restart_failed", message: e.message });
    } finally {
      leg.restarting = false;
    }
    clearTimeout(leg.retryTimer);
    leg.retryTimer = setTimeout(() => {
      const ice = pc.iceConnectionState;
      if (ice === "disconnected" || ice === "failed" || ice === "checking") void this.restartIce(leg, "retry");
    }, ICE_RESTART_RETRY_MS);
  }
  async watchStalls() {
    if (this.state !== "joined") return;
    for (const leg of this.legs()) {
      const ice = leg.pc.iceConnectionState;
      if (leg.restarting || !leg.session || ice !== "connected" && ice !== "completed") {
        leg.flowing = false;
        leg.stalledPolls = 0;
        leg.lastBytes = void 0;
        continue;
      }
      let bytes = 0;
      try {
        (await leg.pc.getStats()).forEach((r) => {
          if (r.type === "transport") bytes += r.bytesReceived ?? 0;
        });
      } catch {
        continue;
      }
      const delta = bytes - (leg.lastBytes ?? bytes);
      leg.lastBytes = bytes;
      if (delta >= FLOWING_BYTES) {
        leg.flowing = true;
        leg.stalledPolls = 0;
      } else if (delta === 0 && leg.flowing) {
        leg.stalledPolls = (leg.stalledPolls ?? 0) + 1;
        if (leg.stalledPolls >= STALL_POLLS) {
          leg.flowing = false;
          leg.stalledPolls = 0;
          void this.restartIce(leg, "stalled");
        }
      }
    }
  }
  // Every connection that is still there.
  legs() {
    return [this.publisher, this.screen, ...this.subs.values()].filter((l) => l !== null);
  }
  // Offers go at once, without waiting for ICE candidates: Arc's nodes are
  // ICE-lite and learn the browser's addresses from its connectivity checks.
  async openLeg(stream, screen) {
    const pc = this.peerConnection();
    const leg = { pc, session: null, stream };
    this.watchIce(leg);
    for (const track of stream.getTracks()) {
      const sendEncodings = track.kind === "video" && !screen && this.simulcast ? layers(track) : void 0;
      const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream], ...sendEncodings ? { sendEncodings } : {} });
      if (track.kind === "audio") redAudio(t, this.red);
    }
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await this.request({ type: "publish", sdp: pc.localDescription?.sdp ?? "", screen });
      leg.session = answer.session_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (e) {
      pc.close();
      throw e;
    }
    this.emit("published", { screen });
    return leg;
  }
  /**
   * Dynacast: the server asks the camera connection (media session
   * `session`) to pause the simulcast layers nobody watches, or to resume
   * them; their encodings' `active` follow, one change at a time (the
   * browser refuses overlapping `setParameters`). A change that fails is
   * left: the server says it again within ten seconds.
   */
  sendLayers(session, wanted) {
    const leg = [this.publisher, this.screen].find((l) => l?.session === session);
    if (!leg) return;
    const apply = async () => {
      if (leg.pc.connectionState === "closed") return;
      for (const t of leg.pc.getTransceivers()) {
        if (t.sender.track?.kind !== "video") continue;
        const params = t.sender.getParameters();
        if (!params.encodings || params.encodings.length < 2) continue;
        let changed = false;
        for (const e of params.encodings) {
          const w = wanted.find((x) => x.rid === e.rid);
          if (w && e.active !== false !== w.active) {
            e.active = w.active;
            changed = true;
          }
        }
        if (changed) await t.sender.setParameters(params);
      }
    };
    leg.layersChain = (leg.layersChain ?? Promise.resolve()).then(apply).catch(() => void 0);
  }
  async publishLocal() {
    const old = this.publisher;
    this.publisher = null;
    if (old) {
      if (old.session) this.send({ type: "close_media", session_id: old.session });
      old.pc.close();
    }
    if (!this.local || !this.me?.permissions.publish || this.state !== "joined") return;
    this.publisher = await this.openLeg(this.local, false);
    this.publisher.reopen = () => void this.publishLocal();
  }
  async receive(p, screen) {
    const key = screen ? p.identity + "#screen" : p.identity;
    if (this.subs.has(key) || p.sid === this.me?.sid || !this.me?.permissions.subscribe) return;
    const pc = this.peerConnection();
    const stream = new MediaStream();
    const leg = { pc, session: null, stream, preference: this.preferences.get(key) };
    leg.reopen = () => {
      if (this.subs.get(key) !== leg) return;
      this.dropSub(key, false);
      const now = [...this.participants.values()].find((x) => x.identity === p.identity);
      if (now) void this.receive(now, screen);
    };
    this.watchIce(leg);
    this.subs.set(key, leg);
    redAudio(pc.addTransceiver("audio", { direction: "recvonly" }), this.red);
    pc.addTransceiver("video", { direction: "recvonly" });
    let told = false;
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      if (!told) {
        told = true;
        this.emit("remoteStream", { key, participant: p, screen, stream });
      }
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await this.request({
        type: "subscribe",
        sdp: pc.localDescription?.sdp ?? "",
        participant: p.identity,
        screen
      });
      leg.session = answer.session_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.tellPreference(leg);
    } catch (e) {
      if (this.subs.get(key) === leg) this.dropSub(key, false);
      if (!(e instanceof ArcError && e.code === "reconnecting")) {
        this.emit("notice", { code: "subscribe_failed", message: `Could not receive ${p.name || p.identity}: ${e.message}` });
      }
    }
  }
  autoReceive(p) {
    if (!this.autoSubscribe) return;
    if (p.tracks.some((t) => t.source === "camera" || t.source === "microphone")) void this.receive(p, false);
    if (p.tracks.some((t) => t.source === "screen_share")) void this.receive(p, true);
  }
  ownPermissions(now) {
    const me = this.me;
    if (!me) return;
    const before = me.permissions;
    me.permissions = now;
    if (before.publish && !now.publish) {
      this.closePublishing();
    } else if (!before.publish && now.publish && this.local) {
      void this.publishLocal();
    }
    if (before.subscribe && !now.subscribe) {
      for (const key of [...this.subs.keys()]) this.dropSub(key, false);
    } else if (!before.subscribe && now.subscribe) {
      for (const p of this.participants.values()) this.autoReceive(p);
    }
    this.emit("permissionsChanged", { before, now });
  }
  onMessage(m) {
    switch (m.type) {
      case "join": {
        const first = this.me === null;
        if (!m.resumed && !first) this.teardown();
        this.resumeToken = m.resume_token ?? "";
        this.iceServers = (m.ice_servers ?? []).map(
          (s) => ({ urls: s.urls, username: s.username, credential: s.credential })
        );
        this.attempts = 0;
        this.state = "joined";
        this.room = m.room;
        this.me = m.participant;
        this.moderator = !!m.moderator;
        this.participants.clear();
        for (const p of m.participants) this.participants.set(p.sid, p);
        const present = new Set(m.participants.map((p) => p.identity));
        for (const key of [...this.subs.keys()]) if (!present.has(key.replace(/#screen$/, ""))) this.dropSub(key, true);
        this.emit("joined", {
          room: m.room,
          me: m.participant,
          participants: m.participants,
          moderator: this.moderator,
          resumed: !!m.resumed
        });
        this.firstJoin?.resolve();
        this.firstJoin = null;
        if (!m.resumed && this.local && !this.publisher) void this.publishLocal();
        for (const p of this.participants.values()) this.autoReceive(p);
        if (m.resumed) {
          for (const leg of this.legs()) {
            const ice = leg.pc.iceConnectionState;
            if (leg.restartWanted || ice === "failed" || ice === "disconnected") void this.restartIce(leg, "resumed");
          }
        }
        break;
      }
      case "participant_joined":
        this.participants.set(m.participant.sid, m.participant);
        this.emit("participantJoined", m.participant);
        break;
      case "participant_updated":
        if (m.participant.sid === this.me?.sid) {
          const now = m.participant.permissions;
          const before = this.me.permissions;
          this.me = { ...m.participant, permissions: before };
          if (before.publish !== now.publish || before.subscribe !== now.subscribe || before.publish_data !== now.publish_data) {
            this.ownPermissions(now);
          }
        } else {
          this.participants.set(m.participant.sid, m.participant);
        }
        this.emit("participantUpdated", m.participant);
        break;
      case "participant_left": {
        const p = this.participants.get(m.sid) ?? { sid: m.sid, identity: m.identity, permissions: { publish: false, subscribe: false, publish_data: false }, tracks: [], joined_at_ms: 0 };
        this.participants.delete(m.sid);
        this.dropSub(p.identity, true);
        this.dropSub(p.identity + "#screen", true);
        this.emit("participantLeft", { participant: p, reason: m.reason });
        break;
      }
      case "track_published": {
        const p = this.participants.get(m.track.sid) ?? (m.track.sid === this.me?.sid ? this.me : void 0);
        if (!p) break;
        p.tracks = p.tracks.filter((t) => t.track_id !== m.track.track_id).concat([m.track]);
        this.emit("trackPublished", { participant: p, track: m.track });
        if (p !== this.me) this.autoReceive(p);
        break;
      }
      case "track_unpublished": {
        const p = this.participants.get(m.sid) ?? (m.sid === this.me?.sid ? this.me : void 0);
        if (!p) break;
        const gone = p.tracks.find((t) => t.track_id === m.track_id);
        p.tracks = p.tracks.filter((t) => t.track_id !== m.track_id);
        if (gone?.source === "screen_share") this.dropSub(p.identity + "#screen", true);
        this.emit("trackUnpublished", { participant: p, trackId: m.track_id });
        break;
      }
      case "track_muted": {
        const p = this.participants.get(m.sid) ?? (m.sid === this.me?.sid ? this.me : void 0);
        if (!p) break;
        for (const t of p.tracks) if (t.track_id === m.track_id) t.muted = m.muted;
        this.emit("trackMuted", { participant: p, trackId: m.track_id, muted: m.muted, byModerator: m.by === "moderator" });
        break;
      }
      case "room_updated":
        if (this.room) this.room.metadata = m.metadata;
        this.emit("roomUpdated", { metadata: m.metadata ?? null });
        break;
      case "active_speakers":
        this.emit("speakers", m.speakers);
        break;
      case "connection_quality":
        this.emit("quality", { sid: m.sid, identity: m.identity, quality: m.quality });
        break;
      case "send_layers":
        this.sendLayers(m.session_id, m.layers ?? []);
        break;
      case "data":
        this.emit("data", { fromSid: m.from_sid, fromIdentity: m.from_identity, payload: m.payload, topic: m.topic });
        break;
      case "answer":
      case "ice_restarted":
        this.pending.get(m.id)?.resolve(m);
        this.pending.delete(m.id);
        break;
      case "error":
        if (m.id && this.pending.has(m.id)) {
          this.pending.get(m.id)?.reject(new ArcError(m.code, m.message));
          this.pending.delete(m.id);
        } else {
          this.emit("notice", { code: m.code, message: m.message });
        }
        break;
      case "reconnect":
        this.state = "reconnecting";
        this.resumeToken = "";
        this.teardown();
        this.emit("reconnecting", { reason: m.reason });
        break;
      case "removed":
        this.finish("removed", "You left the meeting: " + String(m.reason).replaceAll("_", " ") + ".");
        break;
      case "room_closed":
        this.finish("room_closed", "The meeting ended (" + String(m.reason).replaceAll("_", " ") + ").");
        break;
    }
  }
};
function redAudio(t, on) {
  const codecs = typeof t.setCodecPreferences === "function" ? RTCRtpReceiver.getCapabilities?.("audio")?.codecs : void 0;
  if (!codecs) return;
  const isRed = (c) => c.mimeType.toLowerCase() === "audio/red";
  if (!codecs.some(isRed)) return;
  try {
    t.setCodecPreferences(on ? [...codecs.filter(isRed), ...codecs.filter((c) => !isRed(c))] : codecs.filter((c) => !isRed(c)));
  } catch {
  }
}
function layers(track) {
  const width = track.getSettings().width ?? 640;
  const out = [];
  if (width >= 960) out.push({ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 15e4 });
  out.push({ rid: "h", scaleResolutionDownBy: 2, maxBitrate: width >= 960 ? 5e5 : 25e4 });
  out.push({ rid: "f", scaleResolutionDownBy: 1, maxBitrate: width >= 960 ? 17e5 : 8e5 });
  return out;
}
export {
  ArcError,
  Room
};
