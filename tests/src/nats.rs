//! nats-server processes for tests: one server or a cluster of three, each
//! with JetStream, its own store and log file under a temporary directory, on
//! free loopback ports. A server can be SIGKILLed and started again on the
//! same ports and store. Servers are killed when dropped, and their last log
//! lines are printed if the test is failing.
//!
//! Needs the nats-server binary: `ARC_NATS_SERVER_BIN`, else `nats-server` on
//! the PATH.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One server of a [`NatsServers`].
#[derive(Debug)]
pub struct Server {
    /// Its name (`n1`, `n2`, …), as the cluster knows it.
    pub name: String,
    /// The port clients connect to.
    pub client_port: u16,
    /// The monitoring (HTTP) port.
    pub monitor_port: u16,
    /// Its route port in a cluster.
    cluster_port: Option<u16>,
    log: PathBuf,
    child: Option<Child>,
}

/// One nats-server, or a three-server cluster.
#[derive(Debug)]
pub struct NatsServers {
    pub servers: Vec<Server>,
    bin: String,
    /// Stores and logs of the servers.
    dir: tempfile::TempDir,
    /// A configuration file every server reads (users and permissions, TLS).
    config: Option<PathBuf>,
}

/// `n` distinct free ports (held together, then released for the servers).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

impl NatsServers {
    /// One server with JetStream.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// Three servers in one cluster (`arc-test`), with JetStream.
    pub fn cluster() -> Self {
        Self::start(3)
    }

    /// One server with JetStream whose clients must log in as one of
    /// `users`: entries of a nats-server `users` list, e.g.
    /// `{ user: "a", password: "b" }` (every permission) or one with a
    /// `permissions` block (`arc_media::permissions::NatsPermissions::to_conf`).
    pub fn single_with_users(users: &[String]) -> Self {
        let text = format!("authorization {{\n  users: [\n    {}\n  ]\n}}\n", users.join("\n    "));
        Self::start_with(1, Some(&text))
    }

    /// One server with JetStream reading `config` (nats-server syntax: a
    /// `tls { … }` block, users, …) beside the flags the harness gives.
    pub fn single_with_config(config: &str) -> Self {
        Self::start_with(1, Some(config))
    }

    fn start(n: usize) -> Self {
        Self::start_with(n, None)
    }

    fn start_with(n: usize, config: Option<&str>) -> Self {
        let bin = std::env::var("ARC_NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(3 * n);
        let config = config.map(|text| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, text).expect("write the NATS configuration");
            path
        });
        let mut me = Self { servers: Vec::new(), bin, dir, config };
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let log = me.dir.path().join(format!("{name}.log"));
            let cluster_port = (n > 1).then(|| ports[2 * n + i]);
            me.servers.push(Server {
                name,
                client_port: ports[i],
                monitor_port: ports[n + i],
                cluster_port,
                log,
                child: None,
            });
        }
        for i in 0..n {
            me.spawn(i);
        }
        me
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, s)| s.cluster_port.map(|p| format!("nats://127.0.0.1:{p}")))
            .collect();
        let s = &self.servers[i];
        let store = self.dir.path().join(&s.name);
        let out = File::options().create(true).append(true).open(&s.log).expect("open a server log file");
        let err = out.try_clone().expect("clone the log file handle");
        let mut cmd = Command::new(&self.bin);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.arg("-js")
            .arg("-sd")
            .arg(&store)
            .args(["-n", &s.name])
            .args(["-p", &s.client_port.to_string()])
            .args(["-m", &s.monitor_port.to_string()])
            .args(["-a", "127.0.0.1"]);
        if let Some(port) = s.cluster_port {
            cmd.args(["--cluster_name", "arc-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{port}")])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap_or_else(|e| {
            panic!("cannot start {:?} ({e}): install nats-server or set ARC_NATS_SERVER_BIN", self.bin)
        });
        self.servers[i].child = Some(child);
    }

    /// Client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| format!("nats://127.0.0.1:{}", s.client_port)).collect()
    }

    /// Client URLs, comma-separated (as `--nats` takes them).
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    fn index(&self, name: &str) -> usize {
        self.servers.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("no server named {name}"))
    }

    /// SIGKILLs the server named `name`.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        let mut child = self.servers[i].child.take().expect("the server is running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }

    /// Starts the server named `name` again, on its ports and store.
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.servers[i].child.is_none(), "{name} is still running");
        self.spawn(i);
    }

    /// Whether the server answers its health check with JetStream enabled.
    pub fn healthy(&self, name: &str) -> bool {
        let s = &self.servers[self.index(name)];
        let url = format!("127.0.0.1:{}", s.monitor_port);
        let Ok(mut conn) = std::net::TcpStream::connect(url) else { return false };
        use std::io::{Read, Write};
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        let req = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if conn.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    /// Waits until JetStream answers account requests (the cluster elected
    /// its meta leader), up to `within`.
    pub async fn wait_jetstream(&self, within: std::time::Duration) {
        let started = std::time::Instant::now();
        // async-nats reads a plain string as one address: pass the list.
        let servers: Vec<async_nats::ServerAddr> = self.urls().iter().filter_map(|u| u.parse().ok()).collect();
        loop {
            let answer = async {
                let client = async_nats::connect(servers.clone()).await.map_err(|e| e.to_string())?;
                // The raw API (the typed account info does not parse 2.9's answer).
                let request = client.request("$JS.API.INFO", "".into());
                match tokio::time::timeout(std::time::Duration::from_secs(2), request).await {
                    Ok(Ok(m)) if !String::from_utf8_lossy(&m.payload).contains("\"error\"") => Ok(()),
                    Ok(Ok(m)) => Err(String::from_utf8_lossy(&m.payload).into_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            }
            .await;
            let Err(why) = answer else { return };
            assert!(started.elapsed() < within, "JetStream answered within {within:?}: {why}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// What the servers logged about leaders (of the meta group and streams).
    pub fn print_leader_changes(&self) {
        for s in &self.servers {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("leader") || l.contains("Leader")) {
                println!("  {}: {line}", s.name);
            }
        }
    }

    /// Every server that should run still runs: none died on its own.
    pub fn check_running(&mut self) {
        for s in &mut self.servers {
            if let Some(child) = &mut s.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nats-server {} exited by itself: {status}", s.name);
            }
        }
    }
}

impl Drop for NatsServers {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for s in &self.servers {
                print_tail(&s.name, &s.log);
            }
        }
    }
}

fn print_tail(name: &str, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(60);
    eprintln!("---- nats-server {name} ({}), last lines ----", path.display());
    for line in &lines[from..] {
        eprintln!("{line}");
    }
}
