//! `arcctl`: Arc's operations CLI. It talks to arc-control's REST API only.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

mod events;
mod listen;

const EXIT_CODES: &str = "Exit codes: 0 done; 1 any other failure; 2 bad usage; 3 arc-control unreachable; 4 not \
allowed (401/403: no, wrong or insufficient key); 5 not found (404).";

#[derive(Debug, Parser)]
#[command(name = "arcctl", version, about = "Operate an Arc control plane over its REST API", after_help = EXIT_CODES)]
struct Cli {
    /// Base URL of arc-control
    #[arg(long, env = "ARC_URL", default_value = "http://127.0.0.1:7880")]
    url: String,
    /// Admin key (arc-control dev saves one in <data-dir>/admin.key)
    #[arg(long, env = "ARC_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Print raw JSON instead of tables
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One screen: version, log head and health, rooms, participants, webhook backlog, projections and their lag, nodes with their load
    Status,
    /// Rooms
    #[command(subcommand)]
    Rooms(Rooms),
    /// Media nodes
    #[command(subcommand)]
    Nodes(Nodes),
    /// Applications: AppKey/AppSecret, quotas, webhook endpoints
    #[command(subcommand)]
    Apps(Apps),
    /// Access tokens
    #[command(subcommand)]
    Tokens(Tokens),
    /// Webhook deliveries
    #[command(subcommand)]
    Webhooks(Webhooks),
    /// The event log, read-only: its last events, live follow, one event
    #[command(subcommand)]
    Events(Events),
}

#[derive(Debug, Subcommand)]
enum Events {
    /// Print the log's last events (one line each; `--json`: one JSON object per line)
    #[command(after_help = "Examples:
  arcctl events tail                               the last 20 events
  arcctl events tail -n 100 --aggregate room:rm_…  one room's last 100 events
  arcctl events tail --type 'room.participant_*' --follow
                                                   joins and leaves, then live ones
  arcctl events tail --since 15m                   everything of the last 15 minutes
  arcctl --json events tail -f | jq .type          for scripts")]
    Tail {
        /// How many of the last events
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing new events as they are appended (Ctrl-C stops)
        #[arg(short, long)]
        follow: bool,
        /// Only one aggregate: <kind>:<id> (room:…, app:…, node:…, participant:…, track:…)
        #[arg(long)]
        aggregate: Option<String>,
        /// Only these event types, comma-separated; `room.*` matches a prefix
        #[arg(long = "type", value_delimiter = ',')]
        types: Vec<String>,
        /// Every event from this moment on instead of the last N: RFC 3339 or an age (90s, 15m, 2h, 7d)
        #[arg(long, conflicts_with = "lines")]
        since: Option<String>,
    },
    /// Print one event, whole, by its position
    #[command(after_help = "Example:\n  arcctl events show 4294967296")]
    Show { position: u64 },
}

#[derive(Debug, Subcommand)]
enum Apps {
    /// Register an app; prints its AppKey and AppSecret (shown only once)
    Create {
        name: String,
        /// Webhook endpoint (repeatable)
        #[arg(long = "webhook")]
        webhooks: Vec<String>,
        #[arg(long)]
        max_rooms: Option<u32>,
        #[arg(long)]
        max_participants_per_room: Option<u32>,
        #[arg(long)]
        max_participants: Option<u32>,
    },
    /// List apps
    List,
    /// Show one app with its quotas and usage
    Get { app_id: String },
    /// Disable an app: its tokens and credentials stop working
    Disable {
        app_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a disabled app
    Enable { app_id: String },
    /// Issue a new secret; the old one keeps working for the grace period
    RotateSecret {
        app_id: String,
        #[arg(long)]
        grace_s: Option<u32>,
    },
    /// Delete an app for good
    Delete { app_id: String },
    /// Replace the quotas (omitted = unlimited)
    Quotas {
        app_id: String,
        #[arg(long)]
        max_rooms: Option<u32>,
        #[arg(long)]
        max_participants_per_room: Option<u32>,
        #[arg(long)]
        max_participants: Option<u32>,
    },
    /// Replace the webhook endpoints (none = remove all)
    Webhooks { app_id: String, urls: Vec<String> },
}

#[derive(Debug, Subcommand)]
enum Tokens {
    /// Mint an access token locally with the app's key and secret (no server needed)
    Mint {
        #[arg(long, env = "ARC_APP_KEY")]
        app_key: String,
        #[arg(long, env = "ARC_APP_SECRET", hide_env_values = true)]
        app_secret: String,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        room: String,
        /// Lifetime in seconds [default: 21600]
        #[arg(long)]
        ttl_s: Option<u32>,
        /// Display name
        #[arg(long)]
        name: Option<String>,
        /// Grants, comma-separated: join,publish,subscribe,publish_data,admin,record
        #[arg(long, value_delimiter = ',')]
        grants: Option<Vec<String>>,
    },
    /// Revoke a token by its jti
    Revoke {
        #[arg(long)]
        app: String,
        jti: String,
    },
}

#[derive(Debug, Subcommand)]
enum Webhooks {
    /// List an app's deliveries
    List {
        #[arg(long)]
        app: String,
        /// pending, delivered or dead
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Deliver a dead-lettered delivery again
    Redeliver { delivery_id: String },
    /// Run a local webhook receiver: verifies each delivery's signature, prints one line per delivery
    Listen {
        /// Address to listen on; register http://ADDR/ (any path) as the app's webhook URL
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// The app's secret, to verify signatures
        #[arg(long, env = "ARC_APP_SECRET", hide_env_values = true)]
        app_secret: String,
        /// Print each delivery's JSON body too
        #[arg(long)]
        body: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Rooms {
    /// List rooms
    List {
        #[arg(long)]
        app: Option<String>,
        /// open or closed
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Create a room
    Create {
        /// Owning application id
        #[arg(long)]
        app: String,
        /// Room name
        name: String,
        #[arg(long)]
        max_participants: Option<u32>,
        #[arg(long)]
        empty_timeout_s: Option<u32>,
    },
    /// Show one room
    Get { room_id: String },
    /// Close a room for everyone in it
    Close { room_id: String },
}

#[derive(Debug, Subcommand)]
enum Nodes {
    /// List media nodes
    List,
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

/// A failure with its exit code (see [`EXIT_CODES`]).
#[derive(Debug)]
struct Failure {
    exit: u8,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    const UNREACHABLE: u8 = 3;
    const NOT_ALLOWED: u8 = 4;
    const NOT_FOUND: u8 = 5;

    /// The failure for a non-2xx answer.
    fn from_status(status: reqwest::StatusCode, body: &Value) -> Self {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        let exit = match status.as_u16() {
            401 | 403 => Self::NOT_ALLOWED,
            404 => Self::NOT_FOUND,
            _ => 1,
        };
        Self { exit, message: format!("{status}: {code}: {message}") }
    }
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        req
    }

    /// Sends `req`; a transport failure is "unreachable" (exit 3).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        req.send().await.map_err(|e| {
            anyhow::Error::new(Failure {
                exit: Failure::UNREACHABLE,
                message: format!("cannot reach arc-control at {}: {}", self.url, root_cause(&e)),
            })
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = self.send(req).await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Failure::from_status(status, &value).into());
        }
        Ok(value)
    }
}

/// The innermost cause of an error, for one readable line.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn parse_grants(names: &[String]) -> Result<arc_auth::Grants> {
    let mut g = arc_auth::Grants::default();
    for n in names {
        match n.trim() {
            "join" => g.join = true,
            "publish" => g.publish = true,
            "subscribe" => g.subscribe = true,
            "publish_data" => g.publish_data = true,
            "admin" => g.admin = true,
            "record" => g.record = true,
            other => bail!("unknown grant {other:?}; known: join, publish, subscribe, publish_data, admin, record"),
        }
    }
    Ok(g)
}

fn table(rows: &[Vec<String>]) {
    let widths: Vec<usize> =
        (0..rows.first().map_or(0, Vec::len)).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with its causes, never a backtrace.
            eprintln!("error: {e:#}");
            let exit = e.chain().find_map(|c| c.downcast_ref::<Failure>()).map_or(1, |f| f.exit);
            std::process::ExitCode::from(exit)
        }
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    let api = Api { http: reqwest::Client::new(), url: cli.url.clone(), key: cli.admin_key.clone() };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let out = match &cli.command {
        Command::Status => {
            let mut status = api.call(get, "/v1/status", None).await?;
            // Nodes need the admin key; without one the screen says so.
            if api.key.is_some() {
                status["nodes"] = api.call(reqwest::Method::GET, "/v1/nodes", None).await?["nodes"].take();
            }
            status
        }
        Command::Rooms(Rooms::List { app, state, limit }) => {
            let mut q = format!("/v1/rooms?limit={limit}");
            if let Some(a) = app {
                q.push_str(&format!("&app_id={a}"));
            }
            if let Some(s) = state {
                q.push_str(&format!("&state={s}"));
            }
            api.call(get, &q, None).await?
        }
        Command::Rooms(Rooms::Create { app, name, max_participants, empty_timeout_s }) => {
            let body = serde_json::json!({
                "app_id": app, "name": name,
                "max_participants": max_participants, "empty_timeout_s": empty_timeout_s,
            });
            api.call(post, "/v1/rooms", Some(body)).await?
        }
        Command::Rooms(Rooms::Get { room_id }) => api.call(get, &format!("/v1/rooms/{room_id}"), None).await?,
        Command::Rooms(Rooms::Close { room_id }) => api.call(post, &format!("/v1/rooms/{room_id}/close"), None).await?,
        Command::Nodes(Nodes::List) => api.call(get, "/v1/nodes", None).await?,
        Command::Apps(Apps::Create { name, webhooks, max_rooms, max_participants_per_room, max_participants }) => {
            let quotas = serde_json::json!({
                "max_rooms": max_rooms, "max_participants_per_room": max_participants_per_room,
                "max_participants": max_participants,
            });
            let body = serde_json::json!({ "name": name, "webhooks": webhooks, "quotas": quotas });
            api.call(post, "/v1/apps", Some(body)).await?
        }
        Command::Apps(Apps::List) => api.call(get, "/v1/apps", None).await?,
        Command::Apps(Apps::Get { app_id }) => api.call(get, &format!("/v1/apps/{app_id}"), None).await?,
        Command::Apps(Apps::Disable { app_id, reason }) => {
            api.call(post, &format!("/v1/apps/{app_id}/disable"), Some(serde_json::json!({ "reason": reason }))).await?
        }
        Command::Apps(Apps::Enable { app_id }) => api.call(post, &format!("/v1/apps/{app_id}/enable"), None).await?,
        Command::Apps(Apps::RotateSecret { app_id, grace_s }) => {
            let body = serde_json::json!({ "grace_s": grace_s });
            api.call(post, &format!("/v1/apps/{app_id}/rotate-secret"), Some(body)).await?
        }
        Command::Apps(Apps::Delete { app_id }) => {
            api.call(reqwest::Method::DELETE, &format!("/v1/apps/{app_id}"), None).await?
        }
        Command::Apps(Apps::Quotas { app_id, max_rooms, max_participants_per_room, max_participants }) => {
            let body = serde_json::json!({
                "max_rooms": max_rooms, "max_participants_per_room": max_participants_per_room,
                "max_participants": max_participants,
            });
            api.call(reqwest::Method::PUT, &format!("/v1/apps/{app_id}/quotas"), Some(body)).await?
        }
        Command::Apps(Apps::Webhooks { app_id, urls }) => {
            let body = serde_json::json!({ "urls": urls });
            api.call(reqwest::Method::PUT, &format!("/v1/apps/{app_id}/webhooks"), Some(body)).await?
        }
        Command::Tokens(Tokens::Mint { app_key, app_secret, identity, room, ttl_s, name, grants }) => {
            let grants = grants.as_ref().map(|g| parse_grants(g)).transpose()?;
            let request = arc_auth::MintRequest {
                identity: identity.clone(),
                room: room.clone(),
                grants,
                ttl_s: *ttl_s,
                name: name.clone(),
                metadata: None,
                not_before_s: None,
            };
            let secret = arc_auth::AppSecret::from_string(app_secret.clone());
            let (token, claims) = arc_auth::token::mint(
                app_key,
                &secret,
                &request,
                &arc_auth::TokenPolicy::default(),
                chrono::Utc::now(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if !cli.json {
                println!("{token}");
                return Ok(());
            }
            serde_json::json!({ "token": token, "jti": claims.jti, "expires_at": claims.exp, "grants": claims.grants })
        }
        Command::Tokens(Tokens::Revoke { app, jti }) => {
            let body = serde_json::json!({ "app_id": app, "jti": jti });
            api.call(post, "/v1/tokens/revoke", Some(body)).await?
        }
        Command::Webhooks(Webhooks::List { app, state, limit }) => {
            let mut q = format!("/v1/apps/{app}/webhooks/deliveries?limit={limit}");
            if let Some(s) = state {
                q.push_str(&format!("&state={s}"));
            }
            api.call(get, &q, None).await?
        }
        Command::Webhooks(Webhooks::Redeliver { delivery_id }) => {
            api.call(post, &format!("/v1/webhooks/deliveries/{delivery_id}/redeliver"), None).await?
        }
        Command::Webhooks(Webhooks::Listen { listen, app_secret, body }) => {
            return listen::run(*listen, app_secret, *body).await;
        }
        Command::Events(Events::Tail { lines, follow, aggregate, types, since }) => {
            let query = events::Query { aggregate: aggregate.clone(), types: types.clone(), since: since.clone() };
            return events::tail(&api, &query, *lines, *follow, cli.json).await;
        }
        Command::Events(Events::Show { position }) => api.call(get, &format!("/v1/events/{position}"), None).await?,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &cli.command {
        Command::Status => {
            if out["log_reachable"] == false {
                println!(
                    "arc-control {} · {} log UNREACHABLE ({}): writes answer 503, reads may be stale",
                    text(&out["version"]),
                    text(&out["log_backend"]),
                    text(&out["log_error"])
                );
            } else {
                println!(
                    "arc-control {} · {} log, head {} · up {} s",
                    text(&out["version"]),
                    text(&out["log_backend"]),
                    out["log_head"],
                    out["uptime_s"]
                );
            }
            println!(
                "rooms {} open · participants {} · tracks {} · nodes {} live · webhooks {} pending, {} dead",
                out["rooms_open"],
                out["participants_active"],
                out["tracks_published"],
                out["nodes_up"],
                out["webhooks_pending"],
                out["webhooks_dead"]
            );
            println!();
            let mut rows =
                vec![vec!["PROJECTION".into(), "POSITION".into(), "EVENTS".into(), "BEHIND".into(), "STATE".into()]];
            for p in out["projections"].as_array().into_iter().flatten() {
                let state = match (p["caught_up"] == true, out["log_reachable"] != false) {
                    (true, _) => "caught up",
                    (false, true) => "catching up",
                    (false, false) => "stale",
                };
                let behind = match p["behind"].as_u64() {
                    Some(n) if n >= 10_000 => "10000+".to_owned(),
                    Some(n) => n.to_string(),
                    None => "?".into(),
                };
                rows.push(vec![text(&p["name"]), text(&p["position"]), text(&p["events"]), behind, state.into()]);
            }
            table(&rows);
            println!();
            match out["nodes"].as_array() {
                None => println!("(nodes: give the admin key, --admin-key or ARC_ADMIN_KEY, to see them)"),
                Some(nodes) if nodes.is_empty() => println!("no media nodes"),
                Some(nodes) => {
                    let mut rows = vec![vec![
                        "NODE".into(),
                        "STATE".into(),
                        "SESSIONS".into(),
                        "CAPACITY".into(),
                        "CPU %".into(),
                        "MBIT/S OUT".into(),
                        "LAST SEEN".into(),
                    ]];
                    for n in nodes {
                        let mbits = n["bits_out_per_s"].as_f64().map_or("-".into(), |b| format!("{:.1}", b / 1e6));
                        let cpu = n["cpu_percent"].as_f64().map_or("-".into(), |c| format!("{c:.0}"));
                        rows.push(vec![
                            text(&n["node_id"]),
                            text(&n["state"]),
                            text(&n["sessions"]),
                            text(&n["capacity"]),
                            cpu,
                            mbits,
                            text(&n["last_seen_at"]),
                        ]);
                    }
                    table(&rows);
                }
            }
        }
        Command::Rooms(Rooms::List { .. }) => {
            let mut rows = vec![vec![
                "ROOM".into(),
                "APP".into(),
                "NAME".into(),
                "STATE".into(),
                "PEOPLE".into(),
                "CREATED".into(),
            ]];
            for r in out["rooms"].as_array().into_iter().flatten() {
                rows.push(
                    ["room_id", "app_id", "name", "state", "participant_count", "created_at"]
                        .iter()
                        .map(|k| text(&r[*k]))
                        .collect(),
                );
            }
            table(&rows);
        }
        Command::Nodes(Nodes::List) => {
            let mut rows = vec![vec![
                "NODE".into(),
                "STATE".into(),
                "ARCH".into(),
                "CORES".into(),
                "CPU %".into(),
                "LAST SEEN".into(),
            ]];
            for n in out["nodes"].as_array().into_iter().flatten() {
                rows.push(
                    ["node_id", "state", "arch", "cores", "cpu_percent", "last_seen_at"]
                        .iter()
                        .map(|k| text(&n[*k]))
                        .collect(),
                );
            }
            table(&rows);
        }
        Command::Apps(Apps::Create { .. }) => {
            println!("app created: {}", text(&out["app"]["name"]));
            println!("  app key     {}", text(&out["app_key"]));
            println!("  app secret  {}", text(&out["app_secret"]));
            println!("The secret is shown only now; store it safely.");
        }
        Command::Apps(Apps::List) => {
            let mut rows = vec![vec!["APP KEY".into(), "NAME".into(), "STATE".into(), "ROOMS".into(), "PEOPLE".into()]];
            for a in out["apps"].as_array().into_iter().flatten() {
                rows.push(vec![
                    text(&a["app_id"]),
                    text(&a["name"]),
                    text(&a["state"]),
                    text(&a["usage"]["rooms_open"]),
                    text(&a["usage"]["participants"]),
                ]);
            }
            table(&rows);
        }
        Command::Webhooks(Webhooks::List { .. }) => {
            let mut rows = vec![vec![
                "DELIVERY".into(),
                "EVENT".into(),
                "STATE".into(),
                "ATTEMPTS".into(),
                "LAST".into(),
                "URL".into(),
            ]];
            for d in out["deliveries"].as_array().into_iter().flatten() {
                let last = match (&d["last_status"], &d["last_error"]) {
                    (Value::Null, Value::Null) => "-".into(),
                    (s, Value::Null) => text(s),
                    (_, e) => text(e),
                };
                rows.push(vec![
                    text(&d["delivery_id"]),
                    text(&d["event_type"]),
                    text(&d["state"]),
                    text(&d["attempts"]),
                    last,
                    text(&d["url"]),
                ]);
            }
            table(&rows);
        }
        _ => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(())
}
