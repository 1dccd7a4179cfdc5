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
    joined: {
        room: RoomInfo;
        me: Participant;
        participants: Participant[];
        moderator: boolean;
        resumed: boolean;
    };
    participantJoined: Participant;
    participantUpdated: Participant;
    participantLeft: {
        participant: Participant;
        reason: string;
    };
    trackPublished: {
        participant: Participant;
        track: TrackInfo;
    };
    trackUnpublished: {
        participant: Participant;
        trackId: string;
    };
    trackMuted: {
        participant: Participant;
        trackId: string;
        muted: boolean;
        byModerator: boolean;
    };
    /** This page's media is on its way (`screen`: the shared screen). */
    published: {
        screen: boolean;
    };
    /** Another participant's media (camera and microphone, or `screen`) arrives in `stream`. */
    remoteStream: {
        key: string;
        participant: Participant;
        screen: boolean;
        stream: MediaStream;
    };
    /** That stream ended (the participant left, stopped sharing, or the room reconnects). */
    remoteStreamEnded: {
        key: string;
    };
    /** A moderator changed what this participant may do (the node already stopped what it may not). */
    permissionsChanged: {
        before: Permissions;
        now: Permissions;
    };
    speakers: Speaker[];
    quality: {
        sid: string;
        identity: string;
        quality: ConnectionQuality;
    };
    data: {
        fromSid: string;
        fromIdentity: string;
        payload: string;
        topic?: string;
    };
    roomUpdated: {
        metadata: string | null;
    };
    /** The room is coming back: `socket` (it dropped; resuming) or the server's reason (`node_lost`, `node_shutdown`). */
    reconnecting: {
        reason: string;
    };
    /** The room is over for this participant: `removed` (with the server's reason), `room_closed`, `left`, `refused`, `lost`. */
    disconnected: {
        reason: string;
        message: string;
    };
    /** Something the server refused outside a request (shown to people as is). */
    notice: {
        code: string;
        message: string;
    };
    /** A connection's media path broke (`failed`, or `disconnected` for 2 s) and its ICE was restarted on the same session. */
    iceRestarted: {
        session: string;
        reason: string;
    };
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
/** Why a request failed: the server's code and message. */
export declare class ArcError extends Error {
    readonly code: string;
    constructor(code: string, message: string);
}
/** A participant in a room. */
export declare class Room {
    state: RoomState;
    room: RoomInfo | null;
    me: Participant | null;
    moderator: boolean;
    /** Everyone else, by sid. */
    readonly participants: Map<string, Participant>;
    private ws;
    private nextId;
    private readonly pending;
    private readonly handlers;
    private readonly subs;
    /** Received videos' preferences by key (identity or identity#screen), kept across reconnections. */
    private readonly preferences;
    private publisher;
    private screen;
    private local;
    private resumeToken;
    private attempts;
    private readonly autoSubscribe;
    private readonly maxAttempts;
    private readonly iceTransportPolicy;
    private readonly simulcast;
    private readonly red;
    /** The STUN/TURN servers of the last join (TURN with this participant's credentials). */
    iceServers: RTCIceServer[];
    private ping;
    private stallWatch;
    private firstJoin;
    /** A room to join with `token` on the arc-control at `url` (e.g. `location.origin`); listen, then `connect()`. */
    constructor(url: string, token: string, options?: ConnectOptions);
    private peerConnection;
    readonly url: string;
    private readonly token;
    /**
     * Joins the token's room; resolves once joined, rejects when the token is
     * refused (expired, revoked, no join grant) or the room is full.
     */
    connect(): Promise<void>;
    /** `new Room(url, token, options)` and `connect()`, in one (the first `joined` is not seen by listeners added after). */
    static connect(url: string, token: string, options?: ConnectOptions): Promise<Room>;
    /** Listens; returns the function that stops listening. */
    on<K extends keyof RoomEvents>(event: K, handler: Handler<RoomEvents[K]>): () => void;
    off<K extends keyof RoomEvents>(event: K, handler: Handler<RoomEvents[K]>): void;
    /** Publishes the camera and microphone (asks the browser for them unless `stream` is given). */
    publishCamera(stream?: MediaStream): Promise<void>;
    /** Publishes the microphone alone (or adds it to the camera already published). */
    publishMicrophone(): Promise<void>;
    /** The camera and microphone stream this participant publishes. */
    get localStream(): MediaStream | null;
    /** Turns the published microphone (or camera) on or off; off sends silence (black). */
    setMicrophoneEnabled(on: boolean): void;
    setCameraEnabled(on: boolean): void;
    /** Shares a screen (the browser asks which unless `stream` is given) as its own tracks. */
    publishScreen(stream?: MediaStream): Promise<void>;
    /** Stops sharing the screen. */
    stopScreen(): void;
    private closeScreen;
    private closePublishing;
    get sharing(): MediaStream | null;
    /** Receives `identity`'s camera and microphone (or its screen). */
    subscribe(identity: string, options?: {
        screen?: boolean;
    }): Promise<void>;
    /**
     * What to receive of `identity`'s camera (or screen), when it publishes
     * simulcast layers: at most `quality`, and no larger than needed for the
     * size it is shown at (`width` × `height`, in pixels). Kept across
     * reconnections; the server moves to that layer at its next keyframe.
     */
    setPreferredQuality(identity: string, preference: VideoPreference, options?: {
        screen?: boolean;
    }): void;
    private tellPreference;
    /** Stops receiving it. */
    unsubscribe(identity: string, options?: {
        screen?: boolean;
    }): void;
    /**
     * What each received stream decoded so far, by key (identity or
     * identity#screen): video frames, audio packets, the kind of this side's
     * ICE candidate its media uses (`host`, `srflx`, `relay`: TURN), and the
     * size of the last video frame (which simulcast layer arrives).
     */
    stats(): Promise<Record<string, ReceivedStats>>;
    /**
     * What the camera connection sends: one entry per video layer (its rid
     * when simulcast, the size of its last frame, frames sent so far). A
     * browser turns layers off when its bandwidth estimate is low and scales
     * them down when its CPU is busy; this says what goes out now.
     */
    sending(): Promise<SentLayer[]>;
    /**
     * Each connection's ICE state (`new`, `checking`, `connected`, `disconnected`,
     * `failed` …) and ICE restarts, by what it carries: `camera`, `screen`, or a
     * received stream's key.
     */
    connections(): Record<string, {
        ice: RTCIceConnectionState;
        restarts: number;
    }>;
    /** A data message to everyone else, or to the listed identities (needs `publish_data`). */
    sendData(payload: string, options?: {
        to?: string[];
        topic?: string;
    }): void;
    /** Sets this participant's name and/or metadata. */
    updateMetadata(change: {
        name?: string;
        metadata?: string;
    }): void;
    /** Moderation (the token's `admin` grant): mute or unmute another's track. */
    muteTrack(trackId: string, muted: boolean): void;
    removeParticipant(identity: string): void;
    updatePermissions(identity: string, permissions: Permissions): void;
    closeRoom(): void;
    /** Leaves the room: everything stops. */
    leave(): void;
    /** For tests: drops the socket as a network change would (no `leave`). */
    dropSocket(): void;
    private emit;
    private send;
    private request;
    private open;
    private retry;
    private finish;
    private teardown;
    private dropSub;
    private watchIce;
    private restartIce;
    private watchStalls;
    private legs;
    private openLeg;
    /**
     * Dynacast: the server asks the camera connection (media session
     * `session`) to pause the simulcast layers nobody watches, or to resume
     * them; their encodings' `active` follow, one change at a time (the
     * browser refuses overlapping `setParameters`). A change that fails is
     * left: the server says it again within ten seconds.
     */
    private sendLayers;
    private publishLocal;
    private receive;
    private autoReceive;
    private ownPermissions;
    private onMessage;
}
export {};
