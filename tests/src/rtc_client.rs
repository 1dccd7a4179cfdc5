//! A WebRTC client for tests: `rtc` (sans-IO) on its own UDP socket, fast
//! enough for hundreds of sessions (Chromium and aiortc cover interop
//! elsewhere). Publishes synthetic VP8 or plays, through WHIP/WHEP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A WebRTC client on its own UDP socket.
pub struct Client {
    pub pc: RTCPeerConnection,
    pub sock: UdpSocket,
    pub local: SocketAddr,
    pub sender: Option<(RTCRtpSenderId, u32)>,
    pub connected: bool,
    pub received: usize,
    pub location: Option<String>,
    /// The next RTP sequence number [`Client::send_next`] uses.
    pub next_seq: u16,
}

/// A sans-IO peer at `local` that has made its offer (with its host
/// candidate): a VP8 publisher (its sender and SSRC) or a video player. For
/// the socket-driven [`Client`] and for simulations in virtual time alike.
pub fn offering_peer(
    local: SocketAddr,
    publish: bool,
    ssrc: u32,
    now: Instant,
) -> (RTCPeerConnection, Option<(RTCRtpSenderId, u32)>) {
    let mut me = MediaEngine::default();
    me.register_default_codecs().expect("codecs");
    let registry = register_default_interceptors(Registry::new(), &mut me).expect("interceptors");
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("pc");
    let mut sender = None;
    if publish {
        let track = MediaStreamTrack::new(
            "arc-test".into(),
            format!("arc-test-video-{}", local.port()),
            "video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: vp8(),
                ..Default::default()
            }],
        );
        sender = Some((pc.add_track(track).expect("track"), ssrc));
    } else {
        pc.add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
        )
        .expect("transceiver");
    }
    let offer = pc.create_offer(None).expect("offer");
    pc.set_local_description(now, offer).expect("local");
    let cand = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("candidate");
    pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().expect("json")).expect("add candidate");
    (pc, sender)
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("local", &self.local).field("connected", &self.connected).finish()
    }
}

impl Client {
    pub async fn new(publish: bool) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = sock.local_addr().expect("addr");
        let (pc, sender) = offering_peer(local, publish, rand_ssrc(), Instant::now());
        Self { pc, sock, local, sender, connected: false, received: 0, location: None, next_seq: 1 }
    }

    pub fn offer(&self) -> String {
        self.pc.local_description().map(|d| d.sdp.clone()).expect("offer sdp")
    }

    /// Moves packets and timers for up to `for_`.
    pub async fn drive(&mut self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut buf = vec![0u8; 1500];
        while Instant::now() < until {
            while let Some(m) = self.pc.poll_write() {
                let _ = self.sock.send_to(&m.message, m.transport.peer_addr).await;
            }
            while let Some(ev) = self.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = ev {
                    self.connected = true;
                }
            }
            while let Some(m) = self.pc.poll_read() {
                if let RTCMessage::RtpPacket(..) = m.message {
                    self.received += 1;
                }
            }
            let now = Instant::now();
            if self.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = self.pc.handle_timeout(now);
                continue;
            }
            let wait = self.pc.poll_timeout().map_or(Duration::from_millis(5), |t| t.saturating_duration_since(now));
            let wait = wait.min(Duration::from_millis(5)).max(Duration::from_micros(200));
            if let Ok(Ok((n, from))) = tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
                let msg = TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr: self.local,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(&buf[..n]),
                };
                let _ = self.pc.handle_read(msg);
            }
        }
    }

    pub fn send_frame(&mut self, seq: u16, keyframe: bool) {
        let Some((id, ssrc)) = self.sender else { return };
        let mut payload = vec![0u8; 800];
        payload[0] = 0x10;
        payload[1] = if keyframe { 0x00 } else { 0x01 };
        let Some(mut s) = self.pc.rtp_sender(id) else { return };
        let pt = s.get_parameters().rtp_parameters.codecs.first().map_or(96, |c| c.payload_type);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: true,
                payload_type: pt,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        let _ = s.write_rtp(Instant::now(), packet);
    }
}

pub fn rand_ssrc() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    t.wrapping_mul(2_654_435_761) | 1
}

pub async fn post(http: &reqwest::Client, url: &str, token: &str, sdp: String) -> (String, String) {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{url}: {body}");
    (body, location)
}

/// POSTs an offer and answers (status, answer or error body, Location).
pub async fn try_post(http: &reqwest::Client, url: &str, token: &str, sdp: String) -> (u16, String, String) {
    let resp = match http.post(url).bearer_auth(token).header("content-type", "application/sdp").body(sdp).send().await
    {
        Ok(r) => r,
        Err(e) => return (0, e.to_string(), String::new()),
    };
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, resp.text().await.unwrap_or_default(), location)
}

impl Client {
    /// Sends the next frame (sequence numbers continue across calls: SRTP
    /// refuses a repeated one as a replay).
    pub fn send_next(&mut self, keyframe: bool) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.send_frame(seq, keyframe);
    }

    /// Opens a session through `POST {base}/v1/{whip|whep}/{room}` and sets
    /// the answer; the client still has to be driven to connect.
    pub async fn open(http: &reqwest::Client, base: &str, room: &str, token: &str, publish: bool) -> Self {
        let mut c = Self::new(publish).await;
        let path = if publish { "whip" } else { "whep" };
        let (answer, location) = post(http, &format!("{base}/v1/{path}/{room}"), token, c.offer()).await;
        c.pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer).expect("answer"))
            .expect("remote");
        c.location = Some(location);
        c
    }

    /// Sets the answer got another way (a signalling socket's `answer`).
    pub fn accept_answer(&mut self, answer: &str) {
        self.pc
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(answer.to_owned()).expect("answer"))
            .expect("remote");
    }

    /// DELETEs the session resource; answers the status.
    pub async fn delete(&self, http: &reqwest::Client, base: &str, token: &str) -> u16 {
        let url = format!("{base}{}", self.location.as_deref().unwrap_or_default());
        http.delete(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }
}

/// Drives a publisher and a player until the player received `packets`
/// packets (the publisher sends a VP8 frame every few milliseconds once
/// connected); panics after `within`.
pub async fn flow(publisher: &mut Client, player: &mut Client, packets: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while player.received < packets {
        assert!(Instant::now() < deadline, "media flowed within {within:?} ({} packets)", player.received);
        if publisher.connected {
            let keyframe = publisher.next_seq % 5 == 1;
            publisher.send_next(keyframe);
        }
        publisher.drive(Duration::from_millis(3)).await;
        player.drive(Duration::from_millis(3)).await;
    }
}
