//! One worker: a thread with its own single-threaded runtime, its own
//! [`Engine`], its own socket on the shared media port (`SO_REUSEPORT`), and
//! one connected socket per client flow it owns.
//!
//! Steering: the kernel spreads new flows over the workers' shared-port
//! sockets by hash. A STUN check that lands on a worker that does not own its
//! ufrag is handed to the owner (a bounded channel; the [`Routes`] table says
//! who). The owner, once the check is authenticated, opens a socket bound to
//! the same port and `connect`ed to the client: the kernel prefers that exact
//! match, so the flow's later datagrams reach the owner directly, without
//! hand-off. (Datagrams the flow sent before that socket existed are handed
//! over too, from a small per-worker cache.) The connected sockets only
//! receive: every datagram leaves on the worker's shared-port socket, so one
//! `sendmmsg` carries a packet to all of a room's subscribers (see [`super::udp`]).
//!
//! Nothing is shared on the packet path: the engine, the sockets and the
//! buffers belong to the worker's thread (`Rc<RefCell<…>>` inside one
//! thread, never a lock).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_nodeproto::{NodeReply, NodeRequest};
use quinn_udp::UdpSocketState;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};

use super::routes::Routes;
use super::udp::Buffers;
use crate::engine::{Engine, MediaEvent, MediaStats, RouteChange, Transport, demux};

/// Messages to a worker.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    Request(NodeRequest, oneshot::Sender<NodeReply>),
    Stats(oneshot::Sender<MediaStats>),
    SetDraining(bool),
    Shutdown(oneshot::Sender<()>),
    /// A datagram another worker received for a flow this one owns.
    Datagram(SocketAddr, Vec<u8>),
    /// An ICE-TCP connection whose first check named one of this worker's ufrags.
    TcpOpen(SocketAddr, mpsc::Sender<Vec<u8>>),
    TcpFrame(SocketAddr, Vec<u8>),
    TcpClosed(SocketAddr),
}

/// Messages queued towards one worker.
pub(crate) const INBOX_MAX: usize = 4096;
/// Flows remembered as handed to another worker (cleared when full).
const HANDOFF_CACHE_MAX: usize = 16_384;
/// Flows with their own connected socket per worker (beyond, flows share the
/// worker's port socket: still correct, only steered by hand-off).
const FLOW_SOCKETS_MAX: usize = 16_384;

/// What a worker is given to start.
pub(crate) struct WorkerSetup {
    pub(crate) index: usize,
    pub(crate) engine: Engine,
    pub(crate) socket: std::net::UdpSocket,
    pub(crate) inbox: mpsc::Receiver<WorkerMsg>,
    pub(crate) peers: Vec<mpsc::Sender<WorkerMsg>>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) events: mpsc::UnboundedSender<MediaEvent>,
    pub(crate) gauge: Arc<AtomicU64>,
}

/// Starts a worker thread.
pub(crate) fn spawn(setup: WorkerSetup) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("arc-media-w{}", setup.index)).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "a media worker could not start its runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, run(setup));
    })
}

/// A flow's connected socket, owned by its reader task (aborting the task closes it).
struct Flow {
    reader: tokio::task::AbortHandle,
}

struct State {
    index: usize,
    engine: Engine,
    port: Rc<UdpSocket>,
    port_state: Rc<UdpSocketState>,
    local: SocketAddr,
    flows: HashMap<SocketAddr, Flow>,
    tcp_writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    handoff: HashMap<SocketAddr, usize>,
    peers: Vec<mpsc::Sender<WorkerMsg>>,
    routes: Arc<Routes>,
    events: mpsc::UnboundedSender<MediaEvent>,
    gauge: Arc<AtomicU64>,
    buffers: Buffers,
    timer: Rc<Notify>,
    deadline: Instant,
    dropped_tcp: u64,
    handed_off: u64,
}

type Shared = Rc<RefCell<State>>;

async fn run(setup: WorkerSetup) {
    let WorkerSetup { index, engine, socket, mut inbox, peers, routes, events, gauge } = setup;
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "media worker socket");
            return;
        }
    };
    let port_state = match UdpSocketState::new((&socket).into()) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "media worker socket options");
            return;
        }
    };
    let port = match socket.set_nonblocking(true).and_then(|()| UdpSocket::from_std(socket)) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "media worker socket");
            return;
        }
    };
    tracing::debug!(
        worker = index,
        gro = port_state.gro_segments(),
        gso = port_state.max_gso_segments(),
        "media worker up"
    );
    let deadline = engine.poll_timeout();
    let state: Shared = Rc::new(RefCell::new(State {
        index,
        engine,
        port: port.clone(),
        buffers: Buffers::new(&port_state),
        port_state: port_state.clone(),
        local,
        flows: HashMap::new(),
        tcp_writers: HashMap::new(),
        handoff: HashMap::new(),
        peers,
        routes,
        events,
        gauge,
        timer: Rc::new(Notify::new()),
        deadline,
        dropped_tcp: 0,
        handed_off: 0,
    }));
    // The shared port's reader, and the timer.
    tokio::task::spawn_local(read(state.clone(), port, port_state, None));
    tokio::task::spawn_local(timer(state.clone()));
    // Requests and hand-offs, until shutdown.
    while let Some(msg) = inbox.recv().await {
        let now = Instant::now();
        match msg {
            WorkerMsg::Request(req, reply) => {
                let answer = state.borrow_mut().engine.handle_request(now, req);
                let _ = reply.send(answer);
            }
            WorkerMsg::Stats(reply) => {
                let s = state.borrow();
                let mut stats = s.engine.stats();
                stats.dropped_tcp = s.dropped_tcp;
                stats.dropped_send = s.buffers.counts.dropped;
                stats.send_calls = s.buffers.counts.calls;
                stats.handed_off = s.handed_off;
                let _ = reply.send(stats);
            }
            WorkerMsg::SetDraining(d) => state.borrow_mut().engine.set_draining(d),
            WorkerMsg::Shutdown(done) => {
                state.borrow_mut().engine.shutdown(now);
                flush(&state);
                let _ = done.send(());
                return;
            }
            WorkerMsg::Datagram(from, bytes) => {
                state.borrow_mut().engine.handle_datagram(now, from, Transport::Udp, &bytes);
            }
            WorkerMsg::TcpOpen(peer, writer) => {
                state.borrow_mut().tcp_writers.insert(peer, writer);
            }
            WorkerMsg::TcpFrame(peer, frame) => {
                let mut s = state.borrow_mut();
                if s.tcp_writers.contains_key(&peer) {
                    s.engine.handle_datagram(now, peer, Transport::Tcp, &frame);
                }
            }
            WorkerMsg::TcpClosed(peer) => {
                let mut s = state.borrow_mut();
                s.tcp_writers.remove(&peer);
                s.engine.handle_tcp_closed(peer);
            }
        }
        flush(&state);
    }
    // Every handle is gone: end what is left.
    state.borrow_mut().engine.shutdown(Instant::now());
    flush(&state);
}

/// Reads a socket (the shared port, or one flow's) in batches until the
/// socket fails or the flow is dropped.
async fn read(state: Shared, socket: Rc<UdpSocket>, udp: Rc<UdpSocketState>, flow: Option<SocketAddr>) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let mut guard = state.borrow_mut();
        let s = &mut *guard;
        let now = Instant::now();
        let mut got = 0usize;
        let result = socket.try_io(tokio::io::Interest::READABLE, || {
            let State { buffers, engine, handoff, peers, routes, index, handed_off, .. } = &mut *s;
            buffers.recv(&udp, (&*socket).into(), |from, data| {
                got += 1;
                dispatch(engine, handoff, peers, routes, *index, handed_off, flow.is_none(), now, from, data);
            })
        });
        match result {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::trace!(error = %e, "media socket read"),
        }
        drop(guard);
        if got > 0 {
            flush(&state);
        }
    }
}

/// Hands a datagram to the engine, or to the worker that owns its flow.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    engine: &mut Engine,
    handoff: &mut HashMap<SocketAddr, usize>,
    peers: &[mpsc::Sender<WorkerMsg>],
    routes: &Routes,
    index: usize,
    handed_off: &mut u64,
    shared_port: bool,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
) {
    if shared_port && !engine.owns_addr(from, Transport::Udp) {
        let owner = match handoff.get(&from) {
            Some(w) => Some(*w),
            None => demux::stun_local_ufrag(data)
                .filter(|u| !engine.owns_ufrag(u))
                .and_then(|u| routes.owner(u))
                .filter(|w| *w != index),
        };
        if let Some(w) = owner
            && let Some(peer) = peers.get(w)
        {
            if handoff.len() >= HANDOFF_CACHE_MAX {
                handoff.clear();
            }
            handoff.insert(from, w);
            // A full inbox drops the datagram, as a full socket buffer would.
            if peer.try_send(WorkerMsg::Datagram(from, data.to_vec())).is_ok() {
                *handed_off += 1;
            }
            return;
        }
    }
    engine.handle_datagram(now, from, Transport::Udp, data);
}

/// Runs the engine's timers.
async fn timer(state: Shared) {
    loop {
        let (deadline, notify) = {
            let s = state.borrow();
            (s.deadline, s.timer.clone())
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                state.borrow_mut().engine.handle_timeout(now);
                flush(&state);
            }
            () = notify.notified() => {}
        }
    }
}

/// Carries out what the engine produced: datagrams (batched), routing
/// changes, events; then re-arms the timer.
fn flush(state: &Shared) {
    let mut new_flows = Vec::new();
    {
        let mut guard = state.borrow_mut();
        let s = &mut *guard;
        // Datagrams: queued for the whole pass, then sent in batches
        // (`sendmmsg`, GSO runs) on the shared port's socket.
        while let Some(t) = s.engine.poll_transmit() {
            match t.transport {
                Transport::Tcp => {
                    let Some(writer) = s.tcp_writers.get(&t.to) else { continue };
                    if writer.try_send(rtc::shared::tcp_framing::frame_packet(&t.payload)).is_err() {
                        s.dropped_tcp += 1;
                    }
                }
                Transport::Udp => s.buffers.push(t.to, t.payload, &*s.port, &s.port_state),
            }
        }
        s.buffers.flush(&*s.port, &s.port_state);
        // Routing.
        while let Some(change) = s.engine.poll_route() {
            match change {
                RouteChange::Ufrag { ufrag, owned } => s.routes.set(&ufrag, s.index, owned),
                RouteChange::Addr { addr, transport: Transport::Udp, owned: true } => {
                    if !s.flows.contains_key(&addr) && s.flows.len() < FLOW_SOCKETS_MAX {
                        new_flows.push(addr);
                    }
                }
                RouteChange::Addr { addr, transport: Transport::Udp, owned: false } => {
                    if let Some(flow) = s.flows.remove(&addr) {
                        flow.reader.abort();
                    }
                    s.handoff.remove(&addr);
                }
                RouteChange::Addr { transport: Transport::Tcp, .. } => {}
            }
        }
        while let Some(e) = s.engine.poll_event() {
            let _ = s.events.send(e);
        }
        s.gauge.store(s.engine.session_count() as u64, Ordering::Relaxed);
        let deadline = s.engine.poll_timeout();
        if deadline != s.deadline {
            s.deadline = deadline;
            s.timer.notify_one();
        }
    }
    for addr in new_flows {
        open_flow(state, addr);
    }
}

/// Opens a socket on the shared port `connect`ed to `addr`, so the kernel
/// delivers the flow's datagrams to this worker directly.
fn open_flow(state: &Shared, addr: SocketAddr) {
    let local = state.borrow().local;
    let socket = match connected_socket(local, addr) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "no socket of its own for a flow; it shares the port socket");
            return;
        }
    };
    let udp = match UdpSocketState::new((&socket).into()) {
        Ok(u) => Rc::new(u),
        Err(_) => return,
    };
    let Ok(socket) = UdpSocket::from_std(socket).map(Rc::new) else { return };
    let reader = tokio::task::spawn_local(read(state.clone(), socket, udp, Some(addr))).abort_handle();
    state.borrow_mut().flows.insert(addr, Flow { reader });
}

fn connected_socket(local: SocketAddr, peer: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if local.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    socket.connect(&peer.into())?;
    Ok(socket.into())
}

/// A socket on the shared media port (`SO_REUSEPORT`), one per worker.
pub(crate) fn port_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
