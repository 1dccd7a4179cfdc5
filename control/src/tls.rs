//! HTTPS for everything arc-control serves (the REST API, WHIP/WHEP, the
//! pages, the signalling WebSocket as `wss://`): rustls with the certificate
//! chain and private key from PEM files.
//!
//! - The pair is read at start (a bad pair stops the start with the reason)
//!   and again on SIGHUP: new connections get the new pair, open ones keep
//!   theirs; a pair that does not load on SIGHUP is refused with a warning
//!   and the old one stays.
//! - `dev --tls-self-signed` makes a pair for `localhost`, `127.0.0.1` and
//!   `::1` into `<data-dir>/tls/` on first use (kept after), and the startup
//!   lines print its SHA-256 fingerprint.
//! - Handshakes run in their own tasks with a deadline
//!   ([`HANDSHAKE_TIMEOUT`]), so a client that stalls mid-handshake holds no
//!   one else up; at most [`HANDSHAKES_MAX`] run at once (the accept loop
//!   waits for a slot, the kernel's backlog holds the rest).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::ControlError;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once.
pub const HANDSHAKES_MAX: usize = 1024;
/// Finished handshakes waiting for the HTTP server to take them.
const READY_MAX: usize = 256;

/// Where the certificate chain and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then its chain.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Reads the pair and makes a server configuration (HTTP/1.1; the
/// signalling WebSocket upgrades over it).
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, ControlError> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ControlError::Config(format!("TLS {what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("certificate", &files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("certificate", &files.cert, &"no CERTIFICATE block in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", &files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ControlError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ControlError::Config(format!("TLS certificate and key do not make a pair: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of the first certificate in `cert` (PEM), as
/// browsers show it: `AB:CD:…`.
pub fn fingerprint(cert: &Path) -> Result<String, ControlError> {
    let first = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ControlError::Config(format!("TLS certificate {}: {e}", cert.display())))?
        .next()
        .ok_or_else(|| ControlError::Config(format!("TLS certificate {}: empty", cert.display())))?
        .map_err(|e| ControlError::Config(format!("TLS certificate {}: {e}", cert.display())))?;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(first.as_ref());
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The self-signed pair in `dir` (`cert.pem`, `key.pem`), made now for
/// `localhost`, `127.0.0.1` and `::1` when missing.
pub fn self_signed(dir: &Path) -> Result<TlsFiles, ControlError> {
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let io =
        |e: std::io::Error| ControlError::Config(format!("writing a self-signed pair into {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ControlError::Config(format!("making a self-signed certificate: {e}")))?;
    crate::server::write_secret(&files.key, &made.signing_key.serialize_pem())?;
    std::fs::write(&files.cert, made.cert.pem()).map_err(io)?;
    Ok(files)
}

/// The server configuration new connections get; replaced on reload.
#[derive(Clone, Debug)]
pub struct Reloadable {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Reloadable {
    /// Loads the pair (failing with the reason).
    pub fn new(files: TlsFiles) -> Result<Self, ControlError> {
        let config = load(&files)?;
        Ok(Self { files, current: Arc::new(RwLock::new(config)) })
    }

    /// Reads the files again; on failure the pair in use stays.
    pub fn reload(&self) -> Result<(), ControlError> {
        let config = load(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Reloads on every SIGHUP, saying what happened, until the process ends.
    pub fn reload_on_sighup(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP: the TLS pair is read at start only");
                return;
            };
            while hup.recv().await.is_some() {
                match me.reload() {
                    Ok(()) => tracing::info!(cert = %me.files.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays"),
                }
            }
        });
    }
}

/// A TCP listener whose connections are TLS streams, for `axum::serve`.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("local", &self.local).finish()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking each connection in its own task.
    pub fn new(tcp: TcpListener, tls: Reloadable) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(READY_MAX);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        // Plain HTTP on the HTTPS port, a scanner, a client
                        // that does not trust the certificate: its problem.
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local, accept_task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (only when the runtime shuts down).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_is_made_once_loads_and_has_a_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = self_signed(dir.path()).expect("made");
        load(&files).expect("loads");
        let first = fingerprint(&files.cert).expect("fingerprint");
        assert_eq!(first.len(), 32 * 3 - 1, "{first}");
        let again = self_signed(dir.path()).expect("kept");
        assert_eq!(fingerprint(&again.cert).expect("fingerprint"), first, "the pair is kept, not remade");
    }

    #[test]
    fn bad_pairs_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = self_signed(dir.path()).expect("made");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let e = load(&TlsFiles { cert: garbage.clone(), key: good.key.clone() }).expect_err("no cert");
        assert!(e.to_string().contains("garbage.pem"), "{e}");
        let e = load(&TlsFiles { cert: good.cert.clone(), key: garbage }).expect_err("no key");
        assert!(e.to_string().contains("key"), "{e}");
        let other = tempfile::tempdir().expect("tempdir");
        let other = self_signed(other.path()).expect("made");
        let e = load(&TlsFiles { cert: good.cert, key: other.key }).expect_err("mismatched");
        assert!(e.to_string().contains("pair"), "{e}");
    }
}
