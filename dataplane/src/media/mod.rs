//! The media node's driver: the I/O around the sans-IO [`Engine`]. One task
//! owns the engine, the UDP socket and the ICE-TCP connections' writers, and
//! the clock: it feeds datagrams, requests and timeouts in, and carries
//! datagrams and events out, in the order the engine documents. Requests
//! arrive through a [`MediaHandle`] (the in-process [`NodeService`] of
//! `arc-control dev`, or NATS requests in `arc-media`).
//!
//! Nothing here decides anything: sessions, tracks and forwarding live in
//! the engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_nodeproto::{NodeReply, NodeRequest, NodeService, SessionError};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, EngineConfig, SESSIONS_MAX_DEFAULT, Transport};
pub use crate::engine::{MediaEvent, MediaStats, RtpKind, SubscriptionEnd};

/// Largest datagram read.
const DATAGRAM_MAX: usize = 1500;
/// Requests queued towards the media task.
const REQUESTS_QUEUE_MAX: usize = 256;
/// ICE-TCP events (frames, opens, closes) queued towards the media task.
const TCP_EVENTS_QUEUE_MAX: usize = 1024;

/// Where the node's media port listens and what it announces.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Local address of the one UDP port.
    pub udp_listen: SocketAddr,
    /// IPs announced as host candidates, with the bound port; empty means
    /// the bound address (loopback if it is unspecified).
    pub announce: Vec<std::net::IpAddr>,
    /// Most sessions at once.
    pub sessions_max: u32,
}

impl MediaConfig {
    /// The media port at `udp_listen`, announcing `announce`, with the default caps.
    pub fn new(udp_listen: SocketAddr, announce: Vec<std::net::IpAddr>) -> Self {
        Self { udp_listen, announce, sessions_max: SESSIONS_MAX_DEFAULT }
    }
}

/// Most ICE-TCP connections open at once.
pub const TCP_CONNECTIONS_MAX: usize = 4096;
/// Frames queued towards one ICE-TCP connection before new ones are dropped
/// (media over TCP that cannot keep up is dropped, never buffered without bound).
pub const TCP_QUEUE_MAX: usize = 512;
/// Largest RFC 4571 frame accepted from a client.
const TCP_FRAME_MAX: usize = 1500;

enum Command {
    Request(NodeRequest, oneshot::Sender<NodeReply>),
    Stats(oneshot::Sender<MediaStats>),
    /// Draining: refuse sessions for rooms this node does not already carry.
    SetDraining(bool),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to the node's media task.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    local: SocketAddr,
    sessions: Arc<AtomicU64>,
}

impl MediaHandle {
    /// The UDP address the media port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Live sessions (cheap, no round trip).
    pub fn session_count(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Answers one request (see [`Engine::handle_request`]).
    pub async fn request(&self, req: NodeRequest) -> NodeReply {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Request(req, tx)).await.is_err() {
            return NodeReply::Error(SessionError::Unavailable);
        }
        rx.await.unwrap_or(NodeReply::Error(SessionError::Unavailable))
    }

    pub async fn stats(&self) -> MediaStats {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stats(tx)).await.is_err() {
            return MediaStats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Starts or stops draining: while draining, only rooms this node already
    /// carries get new sessions; new rooms are refused (`Draining`).
    pub async fn set_draining(&self, draining: bool) {
        let _ = self.tx.send(Command::SetDraining(draining)).await;
    }

    /// Ends every session (reason `node_shutdown`) and stops the task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[async_trait::async_trait]
impl NodeService for MediaHandle {
    async fn serve(&self, req: NodeRequest) -> NodeReply {
        self.request(req).await
    }
}

/// Binds the media port and starts the media task. Events for the log go to
/// `events` (unbounded: the log is the queue, nothing is dropped here).
pub async fn start(
    config: MediaConfig,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<(MediaHandle, tokio::task::JoinHandle<()>)> {
    // UDP, and ICE-TCP (RFC 6544, passive, RFC 4571 framing) on the same
    // port number. With port 0, try a few free UDP ports until TCP binds too.
    let mut attempt = 0;
    let (socket, local, tcp) = loop {
        let socket = UdpSocket::bind(config.udp_listen).await?;
        let local = socket.local_addr()?;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => break (socket, local, tcp),
            Err(e) if config.udp_listen.port() != 0 || attempt >= 10 => return Err(e),
            Err(_) => attempt += 1,
        }
    };
    let tcp_local = tcp.local_addr()?;
    let (tcp_tx, tcp_rx) = mpsc::channel::<TcpIn>(TCP_EVENTS_QUEUE_MAX);
    tokio::spawn(accept_tcp(tcp, tcp_tx));
    let announce_udp: Vec<SocketAddr> = if config.announce.is_empty() {
        let ip = if local.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { local.ip() };
        vec![SocketAddr::new(ip, local.port())]
    } else {
        config.announce.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect()
    };
    let announce_tcp: Vec<SocketAddr> =
        announce_udp.iter().map(|a| SocketAddr::new(a.ip(), tcp_local.port())).collect();
    let engine = Engine::new(
        EngineConfig {
            local_udp: local,
            local_tcp: tcp_local,
            announce_udp,
            announce_tcp,
            sessions_max: config.sessions_max,
        },
        Instant::now(),
    )
    .map_err(std::io::Error::other)?;
    let (tx, rx) = mpsc::channel(REQUESTS_QUEUE_MAX);
    let sessions = Arc::new(AtomicU64::new(0));
    let driver =
        Driver { engine, socket, tcp_writers: HashMap::new(), events, gauge: sessions.clone(), dropped_tcp: 0 };
    let task = tokio::spawn(driver.run(rx, tcp_rx));
    Ok((MediaHandle { tx, local, sessions }, task))
}

struct Driver {
    engine: Engine,
    socket: UdpSocket,
    /// Writers of open ICE-TCP connections, by the client's address.
    tcp_writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    events: mpsc::UnboundedSender<MediaEvent>,
    gauge: Arc<AtomicU64>,
    dropped_tcp: u64,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut tcp_rx: mpsc::Receiver<TcpIn>) {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            let deadline = self.engine.poll_timeout();
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    None => { self.engine.shutdown(Instant::now()); self.flush().await; return; }
                    Some(Command::Shutdown(done)) => {
                        self.engine.shutdown(Instant::now());
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::Request(req, reply)) => {
                        let answer = self.engine.handle_request(Instant::now(), req);
                        let _ = reply.send(answer);
                    }
                    Some(Command::Stats(reply)) => {
                        let mut stats = self.engine.stats();
                        stats.dropped_tcp = self.dropped_tcp;
                        let _ = reply.send(stats);
                    }
                    Some(Command::SetDraining(d)) => self.engine.set_draining(d),
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.engine.handle_datagram(Instant::now(), from, Transport::Udp, &buf[..n]),
                    Err(e) => tracing::debug!(error = %e, "media socket read"),
                },
                Some(t) = tcp_rx.recv() => match t {
                    TcpIn::Open(peer, writer) => {
                        if self.tcp_writers.len() < TCP_CONNECTIONS_MAX {
                            self.tcp_writers.insert(peer, writer);
                        }
                    }
                    TcpIn::Frame(peer, frame) => {
                        if self.tcp_writers.contains_key(&peer) {
                            self.engine.handle_datagram(Instant::now(), peer, Transport::Tcp, &frame);
                        }
                    }
                    TcpIn::Closed(peer) => {
                        self.tcp_writers.remove(&peer);
                        self.engine.handle_tcp_closed(peer);
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => self.engine.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
    }

    /// Carries out what the engine produced: datagrams, then events.
    async fn flush(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            match t.transport {
                Transport::Tcp => {
                    let Some(writer) = self.tcp_writers.get(&t.to) else { continue };
                    if writer.try_send(rtc::shared::tcp_framing::frame_packet(&t.payload)).is_err() {
                        self.dropped_tcp += 1;
                    }
                }
                Transport::Udp => {
                    if let Err(e) = self.socket.send_to(&t.payload, t.to).await {
                        tracing::trace!(to = %t.to, error = %e, "media socket write");
                    }
                }
            }
        }
        while let Some(e) = self.engine.poll_event() {
            let _ = self.events.send(e);
        }
        self.gauge.store(self.engine.session_count() as u64, Ordering::Relaxed);
    }
}

/// What ICE-TCP connection tasks tell the media task.
enum TcpIn {
    Open(SocketAddr, mpsc::Sender<Vec<u8>>),
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

/// Accepts ICE-TCP connections; each gets a reader (RFC 4571 frames in) and
/// a writer (frames out, bounded queue) task.
async fn accept_tcp(listener: tokio::net::TcpListener, to_node: mpsc::Sender<TcpIn>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "ICE-TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE_MAX);
        if to_node.send(TcpIn::Open(peer, wtx)).await.is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some(frame) = wrx.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let to_node = to_node.clone();
        tokio::spawn(async move {
            let mut decoder = rtc::shared::tcp_framing::TcpFrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        decoder.extend_from_slice(&buf[..n]);
                        while let Some(frame) = decoder.next_packet() {
                            if frame.len() > TCP_FRAME_MAX {
                                continue;
                            }
                            if to_node.send(TcpIn::Frame(peer, frame)).await.is_err() {
                                return;
                            }
                        }
                        // A client that sends a frame header promising more than a
                        // datagram's worth and never delivers is cut off.
                        if decoder.buffered_len() > 64 * 1024 {
                            break;
                        }
                    }
                }
            }
            let _ = to_node.send(TcpIn::Closed(peer)).await;
        });
    }
}
