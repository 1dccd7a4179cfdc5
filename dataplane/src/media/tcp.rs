//! ICE-TCP (RFC 6544, passive; RFC 4571 framing): one acceptor for the
//! node. Each connection gets a reader and a writer task; its frames go to
//! the worker owning the ufrag its first STUN check names.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::routes::Routes;
use super::worker::WorkerMsg;
use super::{TCP_CONNECTIONS_MAX, TCP_QUEUE_MAX};
use crate::engine::demux;

/// Largest RFC 4571 frame accepted from a client.
const TCP_FRAME_MAX: usize = 1500;
/// Frames a connection may send before one names a known ufrag.
const FRAMES_BEFORE_OWNER_MAX: usize = 8;

/// Accepts ICE-TCP connections (at most [`TCP_CONNECTIONS_MAX`] at once).
pub(crate) async fn accept(
    listener: tokio::net::TcpListener,
    workers: Vec<mpsc::Sender<WorkerMsg>>,
    routes: Arc<Routes>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "ICE-TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(std::sync::atomic::Ordering::Relaxed) >= TCP_CONNECTIONS_MAX {
            continue;
        }
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE_MAX);
        tokio::spawn(async move {
            while let Some(frame) = wrx.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let (workers, routes, open) = (workers.clone(), routes.clone(), open.clone());
        tokio::spawn(async move {
            let mut decoder = rtc::shared::tcp_framing::TcpFrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            let mut owner: Option<&mpsc::Sender<WorkerMsg>> = None;
            let mut writer = Some(wtx);
            let mut frames_unowned = 0usize;
            'conn: loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        decoder.extend_from_slice(&buf[..n]);
                        while let Some(frame) = decoder.next_packet() {
                            if frame.len() > TCP_FRAME_MAX {
                                continue;
                            }
                            if owner.is_none() {
                                // The first check names the ufrag, and so the worker.
                                let w = demux::stun_local_ufrag(&frame).and_then(|u| routes.owner(u));
                                match (w.and_then(|w| workers.get(w)), writer.take()) {
                                    (Some(tx), Some(wtx)) => {
                                        if tx.send(WorkerMsg::TcpOpen(peer, wtx)).await.is_err() {
                                            break 'conn;
                                        }
                                        owner = Some(tx);
                                    }
                                    (_, w) => {
                                        writer = w;
                                        frames_unowned += 1;
                                        if frames_unowned >= FRAMES_BEFORE_OWNER_MAX {
                                            break 'conn;
                                        }
                                        continue;
                                    }
                                }
                            }
                            if let Some(tx) = owner
                                && tx.send(WorkerMsg::TcpFrame(peer, frame)).await.is_err()
                            {
                                break 'conn;
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
            if let Some(tx) = owner {
                let _ = tx.send(WorkerMsg::TcpClosed(peer)).await;
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
