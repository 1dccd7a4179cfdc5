//! The media node's driver: the I/O around the sans-IO [`Engine`]s.
//!
//! A node runs N workers ([`MediaConfig::workers`], default: the CPUs the
//! process may use), each a thread with its own engine and its own socket on
//! the shared media port (`worker`). A new room is placed on the least-loaded
//! worker and stays there until it closes ([`placement`]), so a room's
//! sessions (and its forwarding) live on one worker and nothing is shared
//! between workers on the packet path; a room is therefore limited to one
//! core's forwarding capacity. Requests arrive
//! through a [`MediaHandle`] (the in-process [`NodeService`] of `arc-control
//! dev`, or NATS requests in `arc-media`) and go to the room's worker, to the
//! worker a session id names, or to all of them (ends, mutes, lists, stats).
//! ICE-TCP connections are accepted here and handed to the worker owning the
//! ufrag of their first check (`tcp`).
//!
//! Nothing here decides anything: sessions, tracks and forwarding live in the
//! engines.
//!
//! # Layout
//! - this file: [`MediaHandle`], [`start`], request routing.
//! - `worker`: one worker's thread, sockets, batching, timers, steering.
//! - `udp`: batched UDP I/O: `recvmmsg`/GRO through `quinn-udp`; GSO runs per
//!   destination and `sendmmsg` batches across destinations.
//! - `routes`: the ufrag → worker table the workers share.
//! - [`placement`]: which worker carries each room (pure).
//! - `tcp`: the ICE-TCP acceptor (RFC 4571 framing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_events::RoomId;
use arc_nodeproto::{NodeReply, NodeRequest, NodeService, SESSIONS_PAGE_MAX, SessionError};
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, EngineConfig, SESSIONS_MAX_DEFAULT, worker_of};
pub use crate::engine::{MediaEvent, MediaStats, RtpKind, SubscriptionEnd};

pub mod placement;
mod routes;
pub(crate) mod tcp;
pub(crate) mod udp;
pub(crate) mod worker;

use worker::WorkerMsg;

/// Where the node's media port listens and what it announces.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Local address of the one UDP port.
    pub udp_listen: SocketAddr,
    /// IPs announced as host candidates, with the bound port; empty means
    /// the bound address (loopback if it is unspecified).
    pub announce: Vec<std::net::IpAddr>,
    /// Most sessions at once (over all workers).
    pub sessions_max: u32,
    /// Worker threads; 0 means one per CPU the process may use.
    pub workers: usize,
    /// Whether Arc protects forwarded media itself (else `rtc` does).
    pub own_srtp_egress: bool,
}

impl MediaConfig {
    /// The media port at `udp_listen`, announcing `announce`, with the default caps.
    pub fn new(udp_listen: SocketAddr, announce: Vec<std::net::IpAddr>) -> Self {
        Self { udp_listen, announce, sessions_max: SESSIONS_MAX_DEFAULT, workers: 0, own_srtp_egress: true }
    }
}

/// Most ICE-TCP connections open at once.
pub const TCP_CONNECTIONS_MAX: usize = 4096;
/// Frames queued towards one ICE-TCP connection before new ones are dropped
/// (media over TCP that cannot keep up is dropped, never buffered without bound).
pub const TCP_QUEUE_MAX: usize = 512;
/// Most worker threads a node starts.
pub const WORKERS_MAX: usize = 256;

/// A cheap, cloneable way to talk to the node's workers.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    workers: Arc<Vec<mpsc::Sender<WorkerMsg>>>,
    local: SocketAddr,
    gauges: Arc<Vec<Arc<AtomicU64>>>,
    sessions_max: u32,
    /// Rooms and their workers (control path only: opens and room ends).
    placement: Arc<std::sync::Mutex<placement::Placement>>,
    /// Whether the node is draining (as last set).
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl MediaHandle {
    /// The UDP address the media port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many workers the node runs.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Whether the node is draining (cheap, no round trip).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Live sessions (cheap, no round trip).
    pub fn session_count(&self) -> u64 {
        self.gauges.iter().map(|g| g.load(Ordering::Relaxed)).sum()
    }

    /// The worker a room is placed on, if it is.
    pub fn worker_of_room(&self, room: &RoomId) -> Option<usize> {
        self.placements().worker_of(room)
    }

    fn placements(&self) -> std::sync::MutexGuard<'_, placement::Placement> {
        // A panic while holding it cannot leave the table half-changed.
        self.placement.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The worker for a session of `room` (placing the room if it is new).
    fn place(&self, room: &RoomId) -> usize {
        let sessions = self.sessions_per_worker();
        self.placements().place(room, &sessions)
    }

    /// Live sessions on each worker.
    pub fn sessions_per_worker(&self) -> Vec<u64> {
        self.gauges.iter().map(|g| g.load(Ordering::Relaxed)).collect()
    }

    async fn ask(&self, worker: usize, req: NodeRequest) -> NodeReply {
        let Some(tx) = self.workers.get(worker) else { return NodeReply::Error(SessionError::NotFound) };
        let (reply, rx) = oneshot::channel();
        if tx.send(WorkerMsg::Request(req, reply)).await.is_err() {
            return NodeReply::Error(SessionError::Unavailable);
        }
        rx.await.unwrap_or(NodeReply::Error(SessionError::Unavailable))
    }

    async fn ask_all(&self, req: &NodeRequest) -> Vec<NodeReply> {
        let mut out = Vec::with_capacity(self.workers.len());
        for w in 0..self.workers.len() {
            out.push(self.ask(w, req.clone()).await);
        }
        out
    }

    /// Answers one request: an open goes to its room's worker, a session's
    /// request to the worker its id names, the rest to every worker.
    pub async fn request(&self, req: NodeRequest) -> NodeReply {
        match &req {
            NodeRequest::Ping => NodeReply::Pong,
            NodeRequest::Open(open) => {
                // The cap is the node's: the workers share it.
                if self.session_count() >= u64::from(self.sessions_max) {
                    return NodeReply::Error(SessionError::Full { limit: self.sessions_max });
                }
                let w = self.place(&open.room_id);
                self.ask(w, req).await
            }
            NodeRequest::Patch { session_id, .. }
            | NodeRequest::Close { session_id }
            | NodeRequest::Prefer { session_id, .. } => match worker_of(session_id) {
                Some(w) => self.ask(usize::from(w), req).await,
                None => NodeReply::Error(SessionError::NotFound),
            },
            NodeRequest::Restrict { .. } => {
                let sessions = self
                    .ask_all(&req)
                    .await
                    .iter()
                    .map(|r| if let NodeReply::Ended { sessions } = r { *sessions } else { 0 })
                    .sum();
                NodeReply::Ended { sessions }
            }
            NodeRequest::End { room_id, sid, .. } => {
                let mut sessions = 0;
                for r in self.ask_all(&req).await {
                    if let NodeReply::Ended { sessions: n } = r {
                        sessions += n;
                    }
                }
                if sid.is_none() {
                    // The room closed: its next session may go anywhere.
                    self.placements().remove(room_id);
                }
                NodeReply::Ended { sessions }
            }
            NodeRequest::Mute { .. } => {
                let found = self.ask_all(&req).await.iter().any(|r| matches!(r, NodeReply::Muted { found: true }));
                NodeReply::Muted { found }
            }
            NodeRequest::Sessions { .. } => {
                // Every worker's page after `after`, merged in id order.
                let mut all = Vec::new();
                let mut more = false;
                for r in self.ask_all(&req).await {
                    if let NodeReply::Sessions { sessions, more: m } = r {
                        all.extend(sessions);
                        more |= m;
                    }
                }
                all.sort_by(|a, b| a.session_id.as_str().cmp(b.session_id.as_str()));
                if all.len() > SESSIONS_PAGE_MAX {
                    all.truncate(SESSIONS_PAGE_MAX);
                    more = true;
                }
                NodeReply::Sessions { sessions: all, more }
            }
        }
    }

    /// The node's figures: every worker's, added up.
    pub async fn stats(&self) -> MediaStats {
        let mut total = MediaStats::default();
        for tx in self.workers.iter() {
            let (reply, rx) = oneshot::channel();
            if tx.send(WorkerMsg::Stats(reply)).await.is_ok()
                && let Ok(s) = rx.await
            {
                total.add(&s);
            }
        }
        total
    }

    /// Starts or stops draining: while draining, only rooms this node already
    /// carries get new sessions; new rooms are refused (`Draining`).
    pub async fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
        for tx in self.workers.iter() {
            let _ = tx.send(WorkerMsg::SetDraining(draining)).await;
        }
    }

    /// Ends every session (reason `node_shutdown`) and stops the workers.
    pub async fn shutdown(&self) {
        for tx in self.workers.iter() {
            let (done, rx) = oneshot::channel();
            if tx.send(WorkerMsg::Shutdown(done)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

#[async_trait::async_trait]
impl NodeService for MediaHandle {
    async fn serve(&self, req: NodeRequest) -> NodeReply {
        self.request(req).await
    }
}

/// Binds the media port (one socket per worker, and the ICE-TCP listener on
/// the same port number) and starts the workers. Events for the log go to
/// `events` (unbounded: the log is the queue, nothing is dropped here). The
/// returned task ends when every worker has stopped.
pub async fn start(
    config: MediaConfig,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<(MediaHandle, tokio::task::JoinHandle<()>)> {
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, WORKERS_MAX);
    // UDP (one SO_REUSEPORT socket per worker) and ICE-TCP (RFC 6544,
    // passive, RFC 4571 framing) on the same port number. With port 0, try a
    // few free ports until everything binds.
    let mut attempt = 0;
    let (sockets, local, tcp) = loop {
        let first = worker::port_socket(config.udp_listen)?;
        let local = first.local_addr()?;
        let mut sockets = vec![first];
        let mut bound = true;
        for _ in 1..workers {
            match worker::port_socket(local) {
                Ok(s) => sockets.push(s),
                Err(_) => {
                    bound = false;
                    break;
                }
            }
        }
        let tcp =
            if bound { tokio::net::TcpListener::bind(local).await } else { Err(std::io::ErrorKind::AddrInUse.into()) };
        match tcp {
            Ok(tcp) => break (sockets, local, tcp),
            Err(e) if config.udp_listen.port() != 0 || attempt >= 10 => return Err(e),
            Err(_) => attempt += 1,
        }
    };
    let tcp_local = tcp.local_addr()?;
    let announce_udp: Vec<SocketAddr> = if config.announce.is_empty() {
        let ip = if local.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { local.ip() };
        vec![SocketAddr::new(ip, local.port())]
    } else {
        config.announce.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect()
    };
    let announce_tcp: Vec<SocketAddr> =
        announce_udp.iter().map(|a| SocketAddr::new(a.ip(), tcp_local.port())).collect();
    let routes = Arc::new(routes::Routes::default());
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(worker::INBOX_MAX)).unzip();
    let gauges: Vec<Arc<AtomicU64>> = (0..workers).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut threads = Vec::with_capacity(workers);
    for (index, (socket, inbox)) in sockets.into_iter().zip(inboxes).enumerate() {
        let engine = Engine::new(
            EngineConfig {
                local_udp: local,
                local_tcp: tcp_local,
                announce_udp: announce_udp.clone(),
                announce_tcp: announce_tcp.clone(),
                sessions_max: config.sessions_max,
                worker: u16::try_from(index).unwrap_or(u16::MAX),
                wall_clock: std::time::SystemTime::now(),
                own_srtp_egress: config.own_srtp_egress,
            },
            Instant::now(),
        )
        .map_err(std::io::Error::other)?;
        threads.push(worker::spawn(worker::WorkerSetup {
            index,
            engine,
            socket,
            inbox,
            peers: senders.clone(),
            routes: routes.clone(),
            events: events.clone(),
            gauge: gauges[index].clone(),
        })?);
    }
    tokio::spawn(tcp::accept(tcp, senders.clone(), routes));
    tracing::info!(workers, port = %local, "media port up");
    let task = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    let handle = MediaHandle {
        workers: Arc::new(senders),
        local,
        gauges: Arc::new(gauges),
        sessions_max: config.sessions_max,
        placement: Arc::default(),
        draining: Arc::default(),
    };
    Ok((handle, task))
}
