// Arc's browser SDK: a participant in a room over the signalling socket
// (`/v1/rtc`, protocol v1 — `schemas/signal/`). One connection publishes the
// camera and microphone, one more a shared screen; one connection receives
// each other participant (and one each shared screen). Data messages,
// active speakers, connection quality and moderation travel over the socket.
//
// Reconnection is built in: when the socket drops, the room comes back with
// the session's resume token (same participant, connections untouched,
// nobody sees a leave); when the server says `reconnect` (the media node
// went away), the room joins again by itself and publishes what it
// published. Served by arc-control at `/sdk/arc.js` (an ES module).

/** What a participant may do. */
export interface Permissions {
  publish: boolean;
  subscribe: boolean;
  publish_data: boolean;
}

export type Source = "camera" | "microphone" | "screen_share" | "screen_share_audio";

/** One published track. */
export interface TrackInfo {
  track_id: string;
  sid: string;
  kind: "audio" | "video";
  source: Source;
  codec: string;
  simulcast: boolean;
  muted: boolean;
}

/** A participant session in the room. */
export interface Participant {
  sid: string;
  identity: string;
  name?: string | null;
  metadata?: string | null;
  permissions: Permissions;
  tracks: TrackInfo[];
  joined_at_ms: number;
}

export interface RoomInfo {
  room_id: string;
  name: string;
  metadata?: string | null;
  max_participants?: number | null;
}

export type ConnectionQuality = "excellent" | "good" | "poor";

export interface Speaker {
  sid: string;
  identity: string;
  /** 0 (silence) to 100 (0 dBov). */
  level: number;
}

/** What one received stream decoded so far ([`Room.stats`]). */
export interface ReceivedStats {
  frames: number;
  audio: number;
  via?: string;
  width?: number;
  height?: number;
}

/** One video layer the camera connection sends ([`Room.sending`]). */
export interface SentLayer {
  rid?: string;
  width?: number;
  height?: number;
  frames: number;
  /** False while the server asked for it to pause (nobody watches it: dynacast). */
  active: boolean;
}

/** The video quality to receive of a participant that publishes simulcast layers. */
export type VideoQuality = "low" | "medium" | "high";

/** What a received video should be: at most `quality`, no larger than needed for `width` × `height` pixels. */
export interface VideoPreference {
  quality?: VideoQuality;
  width?: number;
  height?: number;
}

export type RoomState = "connecting" | "joined" | "reconnecting" | "disconnected";

/** Everything a room tells, by event name. */
export interface RoomEvents {
  /** Joined (first, or again after `reconnect`), or resumed after the socket dropped. */
  joined: { room: RoomInfo; me: Participant; participants: Participant[]; moderator: boolean; resumed: boolean };
  participantJoined: Participant;
  participantUpdated: Participant;
  participantLeft: { participant: Participant; reason: string };
  trackPublished: { participant: Participant; track: TrackInfo };
  trackUnpublished: { participant: Participant; trackId: string };
  trackMuted: { participant: Participant; trackId: string; muted: boolean; byModerator: boolean };
  /** This page's media is on its way (`screen`: the shared screen). */
  published: { screen: boolean };
  /** Another participant's media (camera and microphone, or `screen`) arrives in `stream`. */
  remoteStream: { key: string; participant: Participant; screen: boolean; stream: MediaStream };
  /** That stream ended (the participant left, stopped sharing, or the room reconnects). */
  remoteStreamEnded: { key: string };
  /** A moderator changed what this participant may do (the node already stopped what it may not). */
  permissionsChanged: { before: Permissions; now: Permissions };
  speakers: Speaker[];
  quality: { sid: string; identity: string; quality: ConnectionQuality };
  data: { fromSid: string; fromIdentity: string; payload: string; topic?: string };
  roomUpdated: { metadata: string | null };
  /** The room is coming back: `socket` (it dropped; resuming) or the server's reason (`node_lost`, `node_shutdown`). */
  reconnecting: { reason: string };
  /** The room is over for this participant: `removed` (with the server's reason), `room_closed`, `left`, `refused`, `lost`. */
  disconnected: { reason: string; message: string };
  /** Something the server refused outside a request (shown to people as is). */
  notice: { code: string; message: string };
  /** A connection's media path broke (`failed`, or `disconnected` for 2 s) and its ICE was restarted on the same session. */
  iceRestarted: { session: string; reason: string };
}

export interface ConnectOptions {
  /** Receive every participant's camera, microphone and screen as they publish (default true). */
  autoSubscribe?: boolean;
  /** Reconnection tries before giving up (default 6: at once, then 0.5, 1, 2, 4, 4 s). */
  reconnectAttempts?: number;
  /** `relay`: media only through the TURN servers the server names (for networks that need it, and to test them). */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /**
   * Publish the camera as simulcast layers (default true): the full picture,
   * half its size, and a quarter when the camera is at least 960 pixels
   * wide. Each receiver gets the layer its preference, its rendered size
   * and its link allow.
   */
  simulcast?: boolean;
  /**
   * Redundant audio (RFC 2198 `audio/red`, default true): the microphone
   * sends each Opus frame again in the next packet, so a lost packet is
   * rebuilt from the one after it; received audio takes it too. A receiver
   * without it gets plain Opus from the server.
   */
  red?: boolean;
}

type Handler<T> = (value: T) => void;

interface Pending {
  resolve: (m: ServerMessage) => void;
  reject: (e: Error) => void;
}

interface Leg {
  pc: RTCPeerConnection;
  session: string | null;
  stream: MediaStream;
  /** An ICE restart is under way, or wanted once the socket is back. */
  restarting?: boolean;
  restartWanted?: boolean;
  /** ICE restarts done. */
  restarts?: number;
  iceTimer?: ReturnType<typeof setTimeout>;
  retryTimer?: ReturnType<typeof setTimeout>;
  /** Opens the connection afresh (its session is gone on the node). */
  reopen?: () => void;
  /** A received video's preference (told the server once its session is open). */
  preference?: VideoPreference;
  /** Dynacast: changes to the layers' `active` flags, one at a time. */
  layersChain?: Promise<void>;
  /** What the stall watch saw: bytes received, whether media was flowing, polls without a byte. */
  lastBytes?: number;
  flowing?: boolean;
  stalledPolls?: number;
}

/**
 * The stall watch: every second, each connected connection's received bytes
 * (media, RTCP). One that was receiving (≥ 200 bytes a second: a keep-alive
 * alone is less) and then got nothing for two polls in a row lost its path
 * before ICE says so (it takes Chromium about 5 s), and restarts its ICE.
 */
const STALL_POLL_MS = 1000;
const STALL_POLLS = 2;
const FLOWING_BYTES = 200;

/** How long a connection's ICE may stay `disconnected` before it is restarted. */
const ICE_DISCONNECTED_RESTART_MS = 500;
/** A restarted connection not connected again after this long restarts again. */
const ICE_RESTART_RETRY_MS = 5000;

// The server's messages, loosely typed (schemas/signal/server.v1.json has them exactly).
type ServerMessage = { type: string; [k: string]: any };

/** Why a request failed: the server's code and message. */
export class ArcError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A participant in a room. */
export class Room {
  state: RoomState = "connecting";
  room: RoomInfo | null = null;
  me: Participant | null = null;
  moderator = false;
  /** Everyone else, by sid. */
  readonly participants = new Map<string, Participant>();

  private ws: WebSocket | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<keyof RoomEvents, Set<Handler<any>>>();
  private readonly subs = new Map<string, Leg>();
  /** Received videos' preferences by key (identity or identity#screen), kept across reconnections. */
  private readonly preferences = new Map<string, VideoPreference>();
  private publisher: Leg | null = null;
  private screen: Leg | null = null;
  private local: MediaStream | null = null;
  private resumeToken = "";
  private attempts = 0;
  private readonly autoSubscribe: boolean;
  private readonly maxAttempts: number;
  private readonly iceTransportPolicy: RTCIceTransportPolicy;
  private readonly simulcast: boolean;
  private readonly red: boolean;
  /** The STUN/TURN servers of the last join (TURN with this participant's credentials). */
  iceServers: RTCIceServer[] = [];
  private ping: ReturnType<typeof setInterval> | null = null;
  private stallWatch: ReturnType<typeof setInterval> | null = null;
  private firstJoin: { resolve: () => void; reject: (e: Error) => void } | null = null;

  /** A room to join with `token` on the arc-control at `url` (e.g. `location.origin`); listen, then `connect()`. */
  constructor(url: string, token: string, options: ConnectOptions = {}) {
    this.url = url.replace(/\/+$/, "");
    this.token = token;
    this.autoSubscribe = options.autoSubscribe ?? true;
    this.maxAttempts = options.reconnectAttempts ?? 6;
    this.iceTransportPolicy = options.iceTransportPolicy ?? "all";
    this.simulcast = options.simulcast ?? true;
    this.red = options.red ?? true;
  }

  private peerConnection(): RTCPeerConnection {
    return new RTCPeerConnection({
      bundlePolicy: "max-bundle",
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
    });
  }

  readonly url: string;
  private readonly token: string;

  /**
   * Joins the token's room; resolves once joined, rejects when the token is
   * refused (expired, revoked, no join grant) or the room is full.
   */
  connect(): Promise<void> {
    if (this.firstJoin || this.ws) return Promise.reject(new ArcError("invalid", "connect() once per room"));
    return new Promise((resolve, reject) => {
      this.firstJoin = { resolve, reject };
      this.open();
      this.ping = setInterval(() => this.send({ type: "ping" }), 5000);
      this.stallWatch = setInterval(() => void this.watchStalls(), STALL_POLL_MS);
    });
  }

  /** `new Room(url, token, options)` and `connect()`, in one (the first `joined` is not seen by listeners added after). */
  static async connect(url: string, token: string, options: ConnectOptions = {}): Promise<Room> {
    const room = new Room(url, token, options);
    await room.connect();
    return room;
  }

  /** Listens; returns the function that stops listening. */
  on<K extends keyof RoomEvents>(event: K, handler: Handler<RoomEvents[K]>): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return () => this.off(event, handler);
  }

  off<K extends keyof RoomEvents>(event: K, handler: Handler<RoomEvents[K]>): void {
    this.handlers.get(event)?.delete(handler);
  }

  // ---- publishing ------------------------------------------------------

  /** Publishes the camera and microphone (asks the browser for them unless `stream` is given). */
  async publishCamera(stream?: MediaStream): Promise<void> {
    this.local = stream ?? (await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } }));
    await this.publishLocal();
  }

  /** Publishes the microphone alone (or adds it to the camera already published). */
  async publishMicrophone(): Promise<void> {
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const tracks = [...(this.local?.getVideoTracks() ?? []), ...mic.getAudioTracks()];
    this.local = new MediaStream(tracks);
    await this.publishLocal();
  }

  /** The camera and microphone stream this participant publishes. */
  get localStream(): MediaStream | null {
    return this.local;
  }

  /** Turns the published microphone (or camera) on or off; off sends silence (black). */
  setMicrophoneEnabled(on: boolean): void {
    for (const t of this.local?.getAudioTracks() ?? []) t.enabled = on;
  }

  setCameraEnabled(on: boolean): void {
    for (const t of this.local?.getVideoTracks() ?? []) t.enabled = on;
  }

  /** Shares a screen (the browser asks which unless `stream` is given) as its own tracks. */
  async publishScreen(stream?: MediaStream): Promise<void> {
    if (this.screen) return;
    const s = stream ?? (await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true }));
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
  stopScreen(): void {
    this.closeScreen(true);
  }

  // Ends the screen share; `tell`: ask the server to close its session
  // (not when the server ended it, or the socket is gone).
  private closeScreen(tell: boolean): void {
    const leg = this.screen;
    if (!leg) return;
    this.screen = null;
    if (tell && leg.session) this.send({ type: "close_media", session_id: leg.session });
    leg.pc.close();
    for (const t of leg.stream.getTracks()) t.stop();
  }

  // Ends what this participant publishes, without asking the server (it ended it, or the socket is gone).
  private closePublishing(): void {
    this.publisher?.pc.close();
    this.publisher = null;
    this.closeScreen(false);
  }

  get sharing(): MediaStream | null {
    return this.screen?.stream ?? null;
  }

  // ---- receiving -------------------------------------------------------

  /** Receives `identity`'s camera and microphone (or its screen). */
  async subscribe(identity: string, options: { screen?: boolean } = {}): Promise<void> {
    const p = [...this.participants.values()].find((x) => x.identity === identity);
    if (p) await this.receive(p, options.screen ?? false);
  }

  /**
   * What to receive of `identity`'s camera (or screen), when it publishes
   * simulcast layers: at most `quality`, and no larger than needed for the
   * size it is shown at (`width` × `height`, in pixels). Kept across
   * reconnections; the server moves to that layer at its next keyframe.
   */
  setPreferredQuality(identity: string, preference: VideoPreference, options: { screen?: boolean } = {}): void {
    const key = options.screen ? identity + "#screen" : identity;
    this.preferences.set(key, preference);
    const leg = this.subs.get(key);
    if (!leg) return;
    leg.preference = preference;
    this.tellPreference(leg);
  }

  private tellPreference(leg: Leg): void {
    const p = leg.preference;
    if (!p || !leg.session) return;
    const size = p.width && p.height ? { width: Math.round(p.width), height: Math.round(p.height) } : {};
    this.send({ type: "set_preferred_quality", session_id: leg.session, quality: p.quality ?? "high", ...size });
  }

  /** Stops receiving it. */
  unsubscribe(identity: string, options: { screen?: boolean } = {}): void {
    this.dropSub(options.screen ? identity + "#screen" : identity, true);
  }

  /**
   * What each received stream decoded so far, by key (identity or
   * identity#screen): video frames, audio packets, the kind of this side's
   * ICE candidate its media uses (`host`, `srflx`, `relay`: TURN), and the
   * size of the last video frame (which simulcast layer arrives).
   */
  async stats(): Promise<Record<string, ReceivedStats>> {
    const out: Record<string, ReceivedStats> = {};
    for (const [key, { pc }] of this.subs) {
      let frames = 0;
      let audio = 0;
      let width: number | undefined;
      let height: number | undefined;
      let pair: string | undefined;
      const reports = await pc.getStats();
      reports.forEach((r: any) => {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          frames += r.framesDecoded ?? 0;
          width = r.frameWidth ?? width;
          height = r.frameHeight ?? height;
        }
        if (r.type === "inbound-rtp" && r.kind === "audio") audio += r.packetsReceived ?? 0;
        if (r.type === "transport" && r.selectedCandidatePairId) pair = r.selectedCandidatePairId;
      });
      const local = pair ? reports.get(reports.get(pair)?.localCandidateId) : undefined;
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
  async sending(): Promise<SentLayer[]> {
    if (!this.publisher) return [];
    const out: SentLayer[] = [];
    const paused = new Set<string>();
    for (const t of this.publisher.pc.getTransceivers()) {
      for (const e of t.sender.getParameters().encodings ?? []) if (e.rid && e.active === false) paused.add(e.rid);
    }
    (await this.publisher.pc.getStats()).forEach((r: any) => {
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
  connections(): Record<string, { ice: RTCIceConnectionState; restarts: number }> {
    const out: Record<string, { ice: RTCIceConnectionState; restarts: number }> = {};
    const one = (leg: Leg | null) => leg && { ice: leg.pc.iceConnectionState, restarts: leg.restarts ?? 0 };
    if (this.publisher) out.camera = one(this.publisher)!;
    if (this.screen) out.screen = one(this.screen)!;
    for (const [key, leg] of this.subs) out[key] = one(leg)!;
    return out;
  }

  // ---- talking and moderating -------------------------------------------

  /** A data message to everyone else, or to the listed identities (needs `publish_data`). */
  sendData(payload: string, options: { to?: string[]; topic?: string } = {}): void {
    this.send({ type: "data", payload, to: options.to, topic: options.topic });
  }

  /** Sets this participant's name and/or metadata. */
  updateMetadata(change: { name?: string; metadata?: string }): void {
    this.send({ type: "update_metadata", ...change });
  }

  /** Moderation (the token's `admin` grant): mute or unmute another's track. */
  muteTrack(trackId: string, muted: boolean): void {
    this.send({ type: "mute_track", track_id: trackId, muted });
  }

  removeParticipant(identity: string): void {
    this.send({ type: "remove_participant", identity });
  }

  updatePermissions(identity: string, permissions: Permissions): void {
    this.send({ type: "update_permissions", identity, permissions });
  }

  closeRoom(): void {
    this.send({ type: "close_room" });
  }

  /** Leaves the room: everything stops. */
  leave(): void {
    if (this.state === "disconnected") return;
    this.send({ type: "leave" });
    this.finish("left", "You left the meeting.");
  }

  /** For tests: drops the socket as a network change would (no `leave`). */
  dropSocket(): void {
    this.ws?.close(4000, "dropped");
  }

  // ---- internals -------------------------------------------------------

  private emit<K extends keyof RoomEvents>(event: K, value: RoomEvents[K]): void {
    for (const h of this.handlers.get(event) ?? []) {
      try {
        h(value);
      } catch (e) {
        console.error(e);
      }
    }
  }

  private send(msg: Record<string, unknown>): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ v: 1, ...msg }));
  }

  private request(msg: Record<string, unknown>): Promise<ServerMessage> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send({ ...msg, id });
    });
  }

  private open(): void {
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
            "Could not join: the token was refused (expired, revoked, no join grant) or the room is full.",
          );
          break;
        case "disconnected":
          break;
      }
    };
  }

  // Joins again: at once, then backing off (0.5, 1, 2, 4, 4 s).
  private retry(): void {
    this.attempts += 1;
    if (this.attempts > this.maxAttempts) {
      this.finish("lost", "The connection to the server was lost.");
      return;
    }
    const delay = this.attempts === 1 ? 0 : Math.min(500 * 2 ** (this.attempts - 2), 4000);
    setTimeout(() => {
      if (this.state === "reconnecting") this.open();
    }, delay);
  }

  // The room is over for this participant.
  private finish(reason: string, message: string): void {
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
  private teardown(all = false): void {
    for (const key of [...this.subs.keys()]) this.dropSub(key, false);
    this.closePublishing();
    for (const p of this.pending.values()) p.reject(new ArcError("reconnecting", "the room is reconnecting"));
    this.pending.clear();
    this.participants.clear();
    if (all) this.local = null;
  }

  private dropSub(key: string, tell: boolean): void {
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
  private watchIce(leg: Leg): void {
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

  private async restartIce(leg: Leg, reason: string): Promise<void> {
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
      const value = (sdp: string, name: string) => sdp.match(new RegExp("a=" + name + ":([^\\r\\n]*)"))?.[1] ?? "";
      const m = await this.request({
        type: "restart_ice",
        session_id: leg.session,
        ufrag: value(offer, "ice-ufrag"),
        pwd: value(offer, "ice-pwd"),
      });
      const answer = (pc.currentRemoteDescription?.sdp ?? "")
        .replace(/a=ice-ufrag:[^\r\n]*/g, "a=ice-ufrag:" + m.ufrag)
        .replace(/a=ice-pwd:[^\r\n]*/g, "a=ice-pwd:" + m.pwd);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      leg.restarts = (leg.restarts ?? 0) + 1;
      this.emit("iceRestarted", { session: leg.session, reason });
    } catch (e) {
      // (The checks above narrowed these; the awaits may have changed them.)
      if ((pc.signalingState as RTCSignalingState) === "have-local-offer") {
        await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      }
      if (e instanceof ArcError && e.code === "reconnecting") leg.restartWanted = true;
      else if (e instanceof ArcError && (e.code === "session_not_found" || e.code === "ice_restart_unsupported") && leg.reopen) {
        // Gone from the node, or publishing simulcast layers (which the node
        // cannot keep across an ICE restart): a new session.
        leg.restarting = false;
        leg.reopen();
        return;
      } else if ((pc.connectionState as RTCPeerConnectionState) !== "closed") this.emit("notice", { code: "ice_restart_failed", message: (e as Error).message });
    } finally {
      leg.restarting = false;
    }
    clearTimeout(leg.retryTimer);
    leg.retryTimer = setTimeout(() => {
      const ice = pc.iceConnectionState;
      if (ice === "disconnected" || ice === "failed" || ice === "checking") void this.restartIce(leg, "retry");
    }, ICE_RESTART_RETRY_MS);
  }

  private async watchStalls(): Promise<void> {
    if (this.state !== "joined") return;
    for (const leg of this.legs()) {
      const ice = leg.pc.iceConnectionState;
      if (leg.restarting || !leg.session || (ice !== "connected" && ice !== "completed")) {
        leg.flowing = false;
        leg.stalledPolls = 0;
        leg.lastBytes = undefined;
        continue;
      }
      let bytes = 0;
      try {
        (await leg.pc.getStats()).forEach((r: any) => {
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
  private legs(): Leg[] {
    return [this.publisher, this.screen, ...this.subs.values()].filter((l): l is Leg => l !== null);
  }

  // Offers go at once, without waiting for ICE candidates: Arc's nodes are
  // ICE-lite and learn the browser's addresses from its connectivity checks.
  private async openLeg(stream: MediaStream, screen: boolean): Promise<Leg> {
    const pc = this.peerConnection();
    const leg: Leg = { pc, session: null, stream };
    this.watchIce(leg);
    for (const track of stream.getTracks()) {
      const sendEncodings = track.kind === "video" && !screen && this.simulcast ? layers(track) : undefined;
      const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream], ...(sendEncodings ? { sendEncodings } : {}) });
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
  private sendLayers(session: string, wanted: { rid: string; active: boolean }[]): void {
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
          if (w && (e.active !== false) !== w.active) {
            e.active = w.active;
            changed = true;
          }
        }
        if (changed) await t.sender.setParameters(params);
      }
    };
    leg.layersChain = (leg.layersChain ?? Promise.resolve()).then(apply).catch(() => undefined);
  }

  private async publishLocal(): Promise<void> {
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

  private async receive(p: Participant, screen: boolean): Promise<void> {
    const key = screen ? p.identity + "#screen" : p.identity;
    if (this.subs.has(key) || p.sid === this.me?.sid || !this.me?.permissions.subscribe) return;
    const pc = this.peerConnection();
    const stream = new MediaStream();
    const leg: Leg = { pc, session: null, stream, preference: this.preferences.get(key) };
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
        screen,
      });
      leg.session = answer.session_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.tellPreference(leg);
    } catch (e) {
      if (this.subs.get(key) === leg) this.dropSub(key, false);
      if (!(e instanceof ArcError && e.code === "reconnecting")) {
        this.emit("notice", { code: "subscribe_failed", message: `Could not receive ${p.name || p.identity}: ${(e as Error).message}` });
      }
    }
  }

  private autoReceive(p: Participant): void {
    if (!this.autoSubscribe) return;
    if (p.tracks.some((t) => t.source === "camera" || t.source === "microphone")) void this.receive(p, false);
    if (p.tracks.some((t) => t.source === "screen_share")) void this.receive(p, true);
  }

  private ownPermissions(now: Permissions): void {
    const me = this.me;
    if (!me) return;
    const before = me.permissions;
    me.permissions = now;
    if (before.publish && !now.publish) {
      // The node ended those sessions: close them here without asking it again.
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

  private onMessage(m: ServerMessage): void {
    switch (m.type) {
      case "join": {
        // A resumed session keeps its connections; a new one starts clean.
        const first = this.me === null;
        if (!m.resumed && !first) this.teardown();
        this.resumeToken = m.resume_token ?? "";
        this.iceServers = ((m.ice_servers ?? []) as { urls: string[]; username?: string; credential?: string }[]).map(
          (s) => ({ urls: s.urls, username: s.username, credential: s.credential }),
        );
        this.attempts = 0;
        this.state = "joined";
        this.room = m.room;
        this.me = m.participant;
        this.moderator = !!m.moderator;
        this.participants.clear();
        for (const p of m.participants as Participant[]) this.participants.set(p.sid, p);
        // Whoever left while the socket was away: their streams end.
        const present = new Set((m.participants as Participant[]).map((p) => p.identity));
        for (const key of [...this.subs.keys()]) if (!present.has(key.replace(/#screen$/, ""))) this.dropSub(key, true);
        this.emit("joined", {
          room: m.room,
          me: m.participant,
          participants: m.participants,
          moderator: this.moderator,
          resumed: !!m.resumed,
        });
        this.firstJoin?.resolve();
        this.firstJoin = null;
        if (!m.resumed && this.local && !this.publisher) void this.publishLocal();
        for (const p of this.participants.values()) this.autoReceive(p);
        // Back on a resumed session: connections whose path broke meanwhile restart their ICE.
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
          const now: Permissions = m.participant.permissions;
          const before = this.me!.permissions;
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
        const p = this.participants.get(m.track.sid) ?? (m.track.sid === this.me?.sid ? this.me : undefined);
        if (!p) break;
        p.tracks = p.tracks.filter((t) => t.track_id !== m.track.track_id).concat([m.track]);
        this.emit("trackPublished", { participant: p, track: m.track });
        if (p !== this.me) this.autoReceive(p);
        break;
      }
      case "track_unpublished": {
        const p = this.participants.get(m.sid) ?? (m.sid === this.me?.sid ? this.me : undefined);
        if (!p) break;
        const gone = p.tracks.find((t) => t.track_id === m.track_id);
        p.tracks = p.tracks.filter((t) => t.track_id !== m.track_id);
        if (gone?.source === "screen_share") this.dropSub(p.identity + "#screen", true);
        this.emit("trackUnpublished", { participant: p, trackId: m.track_id });
        break;
      }
      case "track_muted": {
        const p = this.participants.get(m.sid) ?? (m.sid === this.me?.sid ? this.me : undefined);
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
        // Our media node went away: the server closes this socket; join
        // again (a new session: there is nothing to resume).
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
}

/**
 * Redundant audio on an audio transceiver: with `on`, RED first (a browser
 * sends RED only when the answer lists it before Opus, and the server's
 * answer keeps the offer's order); without, no RED at all. Left as the
 * browser has it where codec preferences are not supported.
 */
function redAudio(t: RTCRtpTransceiver, on: boolean): void {
  const codecs = typeof t.setCodecPreferences === "function" ? RTCRtpReceiver.getCapabilities?.("audio")?.codecs : undefined;
  if (!codecs) return;
  const isRed = (c: RTCRtpCodec) => c.mimeType.toLowerCase() === "audio/red";
  if (!codecs.some(isRed)) return;
  try {
    t.setCodecPreferences(on ? [...codecs.filter(isRed), ...codecs.filter((c) => !isRed(c))] : codecs.filter((c) => !isRed(c)));
  } catch {
    // A browser that refuses the list keeps its own order.
  }
}

/**
 * Simulcast layers for a camera track (RFC 8853 rids, smallest first): the
 * full picture and half its size, plus a quarter from 960 pixels wide
 * (smaller cameras get two: a browser sends no more for them).
 */
function layers(track: MediaStreamTrack): RTCRtpEncodingParameters[] {
  const width = track.getSettings().width ?? 640;
  const out: RTCRtpEncodingParameters[] = [];
  if (width >= 960) out.push({ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 });
  out.push({ rid: "h", scaleResolutionDownBy: 2, maxBitrate: width >= 960 ? 500_000 : 250_000 });
  out.push({ rid: "f", scaleResolutionDownBy: 1, maxBitrate: width >= 960 ? 1_700_000 : 800_000 });
  return out;
}
