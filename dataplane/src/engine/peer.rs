//! How one session's `rtc` peer connection is configured: ICE-lite with
//! the credentials `rtc` draws (the engine reads them from the answer and
//! demultiplexes the one UDP port by ufrag; an ICE restart draws new ones),
//! DTLS-SRTP with the AEAD-AES-GCM profiles listed first (the DTLS server
//! takes the client's first common profile, so Chromium, which lists
//! AES128-CM-HMAC-SHA1-80 first, gets that one; a GCM-only list would make
//! Chromium choose AES-256-GCM, and clients without GCM, such as aiortc,
//! fail), the codecs Arc forwards,
//! and an interceptor chain without a NACK responder (the forwarding core
//! answers NACKs from its shared cache), with TWCC feedback for publishers and
//! PLI/FIR/NACK marked for the application. Players get RTX when they offer
//! it (their NACKs are answered on the RTX stream); publishers do not.
//! Players negotiate transport-wide congestion control: the node numbers
//! what it sends them and estimates their downlink (`super::bwe`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, Packet as IPacket, ReceiverReportBuilder, Registry,
    SenderReportBuilder, Slot, StreamInfo, TaggedPacket,
};
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_receiver_only;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;

/// RFC 2198 redundant audio (`rtc` has no constant for it).
pub const MIME_TYPE_RED: &str = "audio/red";

/// The codecs a node negotiates, in preference order per kind.
pub fn codecs() -> Vec<(RtpCodecKind, RTCRtpCodecParameters)> {
    let video_fb = || {
        vec![
            RTCPFeedback { typ: "ccm".into(), parameter: "fir".into() },
            RTCPFeedback { typ: "nack".into(), parameter: String::new() },
            RTCPFeedback { typ: "nack".into(), parameter: "pli".into() },
        ]
    };
    let v = |mime: &str, pt: u8, fmtp: &str| {
        (
            RtpCodecKind::Video,
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: mime.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: fmtp.to_owned(),
                    rtcp_feedback: video_fb(),
                },
                payload_type: pt,
            },
        )
    };
    vec![
        (
            RtpCodecKind::Audio,
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
        ),
        // Opus with redundancy (RFC 2198), as browsers offer it: a
        // publisher that puts it first sends each frame again in the next
        // packet; a player without it gets the newest frame alone.
        (
            RtpCodecKind::Audio,
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RED.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "111/111".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: 63,
            },
        ),
        v(MIME_TYPE_VP8, 96, ""),
        v(MIME_TYPE_H264, 102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"),
        v(MIME_TYPE_H264, 108, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
        v(MIME_TYPE_H264, 112, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032"),
        v(MIME_TYPE_VP9, 98, "profile-id=0"),
        v(MIME_TYPE_AV1, 45, ""),
    ]
}

/// RTX (RFC 4588) for each video codec of [`codecs`], for subscriber legs:
/// a player that offers `rtx` gets its retransmissions on an RTX stream of
/// their own. Each is paired (`apt`) with its primary's payload type, and
/// every primary has one (`rtc` turns RTX on per media kind, so a primary
/// without one would announce an RTX SSRC with no payload type for it).
/// Publisher legs register none: `rtc` unwraps incoming RTX, but its NACK
/// generator then never sees the repaired packets and keeps asking.
pub fn rtx_codecs() -> Vec<(RtpCodecKind, RTCRtpCodecParameters)> {
    codecs()
        .into_iter()
        .filter(|(kind, _)| *kind == RtpCodecKind::Video)
        .map(|(kind, primary)| {
            let rtx = RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={}", primary.payload_type),
                    rtcp_feedback: vec![],
                },
                payload_type: primary.payload_type + 1,
            };
            (kind, rtx)
        })
        .collect()
}

/// The primary payload type an RTX codec's `apt=` names.
pub fn rtx_apt(fmtp: &str) -> Option<u8> {
    fmtp.split(';').find_map(|p| p.trim().strip_prefix("apt=")).and_then(|v| v.trim().parse().ok())
}

/// Names of the codecs a node accepts (for "no codec in common" errors).
pub fn codec_names() -> Vec<String> {
    let mut names: Vec<String> = codecs().into_iter().map(|(_, c)| c.rtp_codec.mime_type).collect();
    names.dedup();
    names
}

/// Marks inbound PLI, FIR, NACK, receiver reports and (a player's) TWCC
/// feedback for the application; the rest of the inbound RTCP stays with
/// the interceptors.
///
/// It also puts a primary stream first in a compound RTCP packet that a
/// subscriber leads with its RTX stream: `rtc` routes a compound by the
/// first SSRC its first packet names and knows only the primary SSRCs of
/// our streams, so Chromium's compounds, whose receiver report names the
/// RTX stream first once retransmissions arrived on it, were dropped whole,
/// and their NACKs with them (seen: 1,065 of them in one 5 %-loss test run).
#[derive(Default)]
struct DeliverFeedback {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// The RTX SSRCs of the leg's own (sending) streams.
    rtx: Vec<u32>,
}

/// Reorders a compound RTCP packet (see [`DeliverFeedback`]) so that the
/// first SSRC it names is not one of `rtx`: in a leading receiver report,
/// a primary's block goes first; else the first packet that names a
/// primary moves to the front. Nothing is dropped or changed otherwise.
fn lead_with_primary(packets: &mut Vec<Box<dyn rtc::rtcp::Packet>>, rtx: &[u32]) {
    let leads_with_rtx = |p: &dyn rtc::rtcp::Packet| p.destination_ssrc().first().is_some_and(|s| rtx.contains(s));
    if !packets.first().is_some_and(|p| leads_with_rtx(p.as_ref())) {
        return;
    }
    if let Some(rr) = packets[0].as_any().downcast_ref::<ReceiverReport>()
        && let Some(i) = rr.reports.iter().position(|b| !rtx.contains(&b.ssrc))
    {
        let mut rr = rr.clone();
        rr.reports.swap(0, i);
        packets[0] = Box::new(rr);
        return;
    }
    if let Some(i) = packets.iter().position(|p| !p.destination_ssrc().is_empty() && !leads_with_rtx(p.as_ref())) {
        let p = packets.remove(i);
        packets.insert(0, p);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if !self.rtx.is_empty()
            && let IPacket::Rtcp(packets) = &mut msg.message.packet
        {
            lead_with_primary(packets, &self.rtx);
        }
        if let IPacket::Rtcp(packets) = &msg.message.packet {
            let wanted = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>()
                    || any.is::<FullIntraRequest>()
                    || any.is::<TransportLayerNack>()
                    || any.is::<ReceiverReport>()
                    || any.is::<TransportLayerCc>()
            });
            if wanted {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for DeliverFeedback {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.push(rtx);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.rtx.retain(|r| Some(*r) != info.ssrc_rtx);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// A DTLS certificate for the node's sessions (ECDSA P-256, self-signed).
///
/// One certificate serves every session of a node (as Janus and mediasoup
/// do): an offer whose m-lines ride separate transports (no BUNDLE) is
/// answered by one peer connection per transport, and clients such as
/// GStreamer's webrtcbin refuse an answer whose m-lines carry different
/// fingerprints. It also spares a key generation per session.
pub fn certificate() -> Result<RTCCertificate, RtcError> {
    let provider = rtc::crypto::default_provider().map_err(|e| RtcError::Other(e.to_string()))?;
    let params = rtc::peer_connection::certificate::CertificateParams::new(vec!["arc-media".to_owned()])
        .map_err(|e| RtcError::Other(e.to_string()))?;
    RTCCertificate::generate(provider.crypto(), rtc::crypto::SignatureScheme::EcdsaP256Sha256, params)
}

/// Whether `cert` expires within `margin` (time to make a new one).
pub fn expires_within(cert: &RTCCertificate, margin: std::time::Duration) -> bool {
    cert.expires.duration_since(std::time::SystemTime::now()).map_or(true, |left| left < margin)
}

/// A new peer connection for one leg. `crypto` is its crypto provider (the
/// engine gives each leg a [`super::srtp::KeyCapture`], so Arc can protect
/// the leg's outgoing media itself). `receives_media`: the leg publishes, so
/// it gets the interceptors that only act on incoming media (NACK generator,
/// receiver reports, TWCC feedback); a player's leg carries none of them
/// (each is per-connection state and queues in `rtc`, for nothing).
pub fn build(
    now: Instant,
    certificate: &RTCCertificate,
    crypto: std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider>,
    receives_media: bool,
) -> Result<RTCPeerConnection, RtcError> {
    use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile as P;
    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_crypto_provider(crypto)
        .with_srtp_protection_profiles(vec![
            P::Srtp_Aead_Aes_128_Gcm,
            P::Srtp_Aead_Aes_256_Gcm,
            P::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        .build();
    let mut media_engine = MediaEngine::default();
    for (kind, codec) in codecs() {
        media_engine.register_codec(codec, kind)?;
    }
    if !receives_media {
        for (kind, codec) in rtx_codecs() {
            media_engine.register_codec(codec, kind)?;
        }
    }
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::AUDIO_LEVEL_URI.to_owned() },
        RtpCodecKind::Audio,
        None,
    )?;
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::SDES_MID_URI.to_owned() },
        RtpCodecKind::Video,
        None,
    )?;
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::SDES_MID_URI.to_owned() },
        RtpCodecKind::Audio,
        None,
    )?;
    if receives_media {
        // Simulcast: a publisher names each layer's stream by its rid
        // (RFC 8852), which `rtc` reads to tell the layers apart.
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI.to_owned() },
            RtpCodecKind::Video,
            None,
        )?;
    }
    let mut registry = Registry::new()
        .with(Slot::from(14_000), DeliverFeedback::default())
        .with(Slot::SenderReport, SenderReportBuilder::new().build());
    if receives_media {
        registry = registry
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
        registry = configure_twcc_receiver_only(registry, &mut media_engine)?;
    } else {
        // Send-side bandwidth estimation (`super::bwe`): the player numbers
        // nothing itself; Arc's egress writes the transport-wide numbers and
        // the engine reads the player's feedback.
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            media_engine.register_feedback(RTCPFeedback { typ: "transport-cc".into(), parameter: String::new() }, kind);
            media_engine.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned() },
                kind,
                None,
            )?;
        }
    }
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().with_certificates(vec![certificate.clone()]).build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)
}

/// Adds a host candidate for each announced address on the node's UDP port,
/// and a passive ICE-TCP one for each on its TCP port (for UDP-blocked clients).
pub fn add_host_candidates(pc: &mut RTCPeerConnection, udp: &[SocketAddr], tcp: &[SocketAddr]) -> Result<(), RtcError> {
    let tcp = tcp.iter().map(|a| ("tcp", a, rtc::ice::tcp_type::TcpType::Passive));
    let udp = udp.iter().map(|a| ("udp", a, rtc::ice::tcp_type::TcpType::default()));
    for (network, a, tcp_type) in tcp.chain(udp) {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.to_owned(),
                address: a.ip().to_string(),
                port: a.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type,
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_video_codec_has_one_rtx_and_no_payload_type_is_taken_twice() {
        let primaries = codecs();
        let rtx = rtx_codecs();
        let video: Vec<u8> =
            primaries.iter().filter(|(k, _)| *k == RtpCodecKind::Video).map(|(_, c)| c.payload_type).collect();
        let mut paired: Vec<u8> = rtx.iter().filter_map(|(_, c)| rtx_apt(&c.rtp_codec.sdp_fmtp_line)).collect();
        paired.sort_unstable();
        let mut expected = video.clone();
        expected.sort_unstable();
        assert_eq!(paired, expected, "one RTX per video codec");
        let mut all: Vec<u8> = primaries.iter().chain(rtx.iter()).map(|(_, c)| c.payload_type).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "payload types are distinct: {all:?}");
        assert!(!codec_names().iter().any(|n| n.eq_ignore_ascii_case(MIME_TYPE_RTX)), "RTX is not a codec to name");
    }

    #[test]
    fn a_compound_led_by_an_rtx_stream_is_led_by_a_primary_and_keeps_every_packet() {
        use rtc::rtcp::reception_report::ReceptionReport;
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
        let block = |ssrc| ReceptionReport { ssrc, ..Default::default() };
        let nack = || TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 10,
            nacks: vec![NackPair { packet_id: 5, lost_packets: 0 }],
        };
        let first = |p: &Vec<Box<dyn rtc::rtcp::Packet>>| p[0].destination_ssrc().first().copied();
        // A receiver report naming the RTX stream (99) first: its blocks swap.
        let rr = ReceiverReport { ssrc: 1, reports: vec![block(99), block(10)], ..Default::default() };
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(rr), Box::new(nack())];
        lead_with_primary(&mut packets, &[99]);
        assert_eq!(first(&packets), Some(10));
        assert_eq!(packets.len(), 2);
        let rr = packets[0].as_any().downcast_ref::<ReceiverReport>().expect("still a receiver report");
        assert_eq!(rr.reports.iter().map(|b| b.ssrc).collect::<Vec<_>>(), vec![10, 99]);
        // A report on the RTX stream alone: the NACK after it leads.
        let rr = ReceiverReport { ssrc: 1, reports: vec![block(99)], ..Default::default() };
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(rr), Box::new(nack())];
        lead_with_primary(&mut packets, &[99]);
        assert_eq!(first(&packets), Some(10));
        assert!(packets[0].as_any().is::<TransportLayerNack>() && packets[1].as_any().is::<ReceiverReport>());
        // Led by a primary already, or nothing but RTX: unchanged.
        let rr = ReceiverReport { ssrc: 1, reports: vec![block(10), block(99)], ..Default::default() };
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(rr.clone())];
        lead_with_primary(&mut packets, &[99]);
        assert_eq!(packets[0].as_any().downcast_ref::<ReceiverReport>(), Some(&rr));
        let only = ReceiverReport { ssrc: 1, reports: vec![block(99)], ..Default::default() };
        let mut packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(only.clone())];
        lead_with_primary(&mut packets, &[99]);
        assert_eq!(packets[0].as_any().downcast_ref::<ReceiverReport>(), Some(&only));
    }

    #[test]
    fn apt_is_read_from_any_position_and_garbage_is_none() {
        assert_eq!(rtx_apt("apt=96"), Some(96));
        assert_eq!(rtx_apt("rtx-time=3000; apt=102"), Some(102));
        assert_eq!(rtx_apt("apt=x"), None);
        assert_eq!(rtx_apt("apt=300"), None);
        assert_eq!(rtx_apt(""), None);
    }
}
