//! `arcctl`: Arc's operations CLI. It talks to arc-control's REST API only.
//!
//! Layout: `main.rs` (the commands and their tables), `config.rs` (named
//! contexts: URL and admin key per control plane), `output.rs` (`-o
//! table|wide|json|yaml`, `--color`), `events.rs` (`events tail|show`, the live
//! follow), `projections.rs` (`projections list|status|rebuild`, the
//! rebuild's progress bar), `listen.rs` (`webhooks listen`).

use anyhow::{Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;

mod config;
mod events;
mod listen;
mod output;
mod projections;

use output::{Col, Format, text};

const TOP_HELP: &str = "Examples:
  arcctl status                                    one screen: log, rooms, projections, nodes
  arcctl context add dev --url http://127.0.0.1:7880 --key-file arc-data/admin.key --use
  arcctl rooms list -o wide                        every column
  arcctl participants list rm_… -o yaml            the API's answer as YAML
  arcctl events tail -f                            the event log, live

Where the URL and admin key come from, first found wins: --url/--admin-key (ARC_URL/ARC_ADMIN_KEY), the context \
named by --context (ARC_CONTEXT), the config file's current context, http://127.0.0.1:7880.

Exit codes: 0 done; 1 any other failure; 2 bad usage; 3 arc-control unreachable; 4 not allowed (401/403: no, \
wrong or insufficient key); 5 not found (404).";

#[derive(Debug, Parser)]
#[command(name = "arcctl", version, about = "Operate an Arc control plane over its REST API", after_help = TOP_HELP)]
struct Cli {
    /// Base URL of arc-control [default: the context's, else http://127.0.0.1:7880]
    #[arg(long, env = "ARC_URL", global = true)]
    url: Option<String>,
    /// Admin key (arc-control dev saves one in <data-dir>/admin.key) [default: the context's]
    #[arg(long, env = "ARC_ADMIN_KEY", hide_env_values = true, global = true)]
    admin_key: Option<String>,
    /// Use this context from the config file instead of the current one
    #[arg(long, env = "ARC_CONTEXT", global = true)]
    context: Option<String>,
    /// Trust this CA (PEM) for https:// besides the system's roots, e.g. the Ansible inventory's tls/ca.pem or
    /// dev's <data-dir>/tls/cert.pem [default: the context's]
    #[arg(long, env = "ARC_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value = "table", global = true)]
    output: Format,
    /// Same as -o json
    #[arg(long, global = true, hide = true)]
    json: bool,
    /// Colour tables and errors: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(long = "color", value_enum, default_value = "auto", global = true)]
    color: output::ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One screen: version, log head and health, rooms, participants, webhook backlog, projections and their lag, nodes with their load
    #[command(after_help = "Examples:\n  arcctl status\n  arcctl status -o json | jq .projections")]
    Status,
    /// Rooms
    #[command(subcommand)]
    Rooms(Rooms),
    /// Who is in a room, and moderation: remove, kick, mute, permissions
    #[command(subcommand)]
    Participants(Participants),
    /// Media nodes: list, show, drain, undrain
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
    /// Read models: their progress, and an online rebuild with a progress bar
    #[command(subcommand)]
    Projections(Projections),
    /// Named control planes (URL and admin key) in arcctl's config file
    #[command(subcommand)]
    Context(ContextCmd),
    /// Print a shell completion script
    #[command(after_help = "Examples:
  arcctl completions bash > ~/.local/share/bash-completion/completions/arcctl
  arcctl completions zsh > \"${fpath[1]}/_arcctl\"
  arcctl completions fish > ~/.config/fish/completions/arcctl.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum Participants {
    /// Who is in a room now, with their tracks
    #[command(after_help = "Examples:\n  arcctl participants list rm_…\n  arcctl participants list rm_… -o wide")]
    List { room_id: String },
    /// One participant, with its permissions and tracks
    #[command(after_help = "Example:\n  arcctl participants show rm_… alice")]
    Show { room_id: String, identity: String },
    /// Remove a participant from the room (it may join again with its token)
    #[command(after_help = "Example:\n  arcctl participants remove rm_… alice")]
    Remove {
        room_id: String,
        identity: String,
        /// End only this session (default: the identity's current one)
        #[arg(long)]
        sid: Option<String>,
    },
    /// Remove a participant and revoke the token it joined with
    #[command(after_help = "Example:\n  arcctl participants kick rm_… mallory")]
    Kick { room_id: String, identity: String },
    /// Mute a published track for everyone (the media node stops forwarding it)
    #[command(after_help = "Example:\n  arcctl participants mute rm_… TR_…")]
    Mute { room_id: String, track_id: String },
    /// Unmute a track a moderator muted
    #[command(after_help = "Example:\n  arcctl participants unmute rm_… TR_…")]
    Unmute { room_id: String, track_id: String },
    /// Replace what a participant may do
    #[command(after_help = "Examples:
  arcctl participants permissions rm_… alice --can subscribe          listen only
  arcctl participants permissions rm_… alice --can publish,subscribe,publish_data
  arcctl participants permissions rm_… alice --can none")]
    Permissions {
        room_id: String,
        identity: String,
        /// Comma-separated: publish, subscribe, publish_data; or none
        #[arg(long, value_delimiter = ',', required = true)]
        can: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Projections {
    /// Every projection: position, events applied, how far behind the log
    #[command(after_help = "Examples:\n  arcctl projections list\n  arcctl projections list -o wide")]
    List,
    /// One projection's progress
    #[command(after_help = "Example:\n  arcctl projections status rooms -o json")]
    Status { name: String },
    /// Rebuild a read model online: its writer empties it and replays the log; a progress bar follows it
    #[command(after_help = "Examples:
  arcctl projections rebuild participants      waits, with events/s and an ETA
  arcctl projections rebuild rooms --no-wait   only ask

While it runs the projection is behind on every instance: /readyz answers 503 and writes that wait for their
read models wait for it. The webhook planner is not rebuilt online (arc-control rebuild webhooks, offline).")]
    Rebuild {
        /// rooms, nodes, apps, participants, tracks or revoked_tokens
        name: String,
        /// Ask for the rebuild and return at once
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Nodes {
    /// List media nodes with their state and load
    #[command(after_help = "Examples:\n  arcctl nodes list\n  arcctl nodes list -o wide")]
    List,
    /// One node, whole
    #[command(after_help = "Example:\n  arcctl nodes show node-dev")]
    Show { node_id: String },
    /// Stop placing new sessions on a node (its sessions keep running)
    #[command(after_help = "Example:\n  arcctl nodes drain media-2")]
    Drain { node_id: String },
    /// Place sessions on a drained node again
    #[command(after_help = "Example:\n  arcctl nodes undrain media-2")]
    Undrain { node_id: String },
}

#[derive(Debug, Subcommand)]
enum ContextCmd {
    /// Add (or replace) a context
    #[command(after_help = "Examples:
  arcctl context add dev --url http://127.0.0.1:7880 --key-file arc-data/admin.key --use
  arcctl context add prod --url https://arc.example.com --key \"$PROD_KEY\"
  arcctl context add lab --url https://10.0.0.11:7880 --key-file lab.key --ca-file ansible/inventory/tls/ca.pem")]
    Add {
        name: String,
        /// The control plane's base URL
        #[arg(long)]
        url: String,
        /// Its admin key
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// Read the admin key from this file (e.g. <data-dir>/admin.key)
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
        /// Trust this CA (PEM) for its HTTPS besides the system's roots (made absolute)
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// Make it the current context
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make a context the current one
    #[command(after_help = "Example:\n  arcctl context use prod")]
    Use { name: String },
    /// List contexts (keys are never printed)
    #[command(after_help = "Example:\n  arcctl context list")]
    List,
    /// Remove a context
    #[command(after_help = "Example:\n  arcctl context remove lab")]
    Remove { name: String },
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
    #[command(
        after_help = "Example:\n  arcctl apps create shop --webhook https://shop.example.com/arc --max-rooms 100"
    )]
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
    #[command(after_help = "Example:\n  arcctl apps list -o wide")]
    List,
    /// Show one app with its quotas and usage
    #[command(after_help = "Example:\n  arcctl apps get APP_KEY")]
    Get { app_id: String },
    /// Disable an app: its tokens and credentials stop working
    #[command(after_help = "Example:\n  arcctl apps disable APP_KEY --reason \"unpaid\"")]
    Disable {
        app_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a disabled app
    #[command(after_help = "Example:\n  arcctl apps enable APP_KEY")]
    Enable { app_id: String },
    /// Issue a new secret; the old one keeps working for the grace period
    #[command(after_help = "Example:\n  arcctl apps rotate-secret APP_KEY --grace-s 3600")]
    RotateSecret {
        app_id: String,
        #[arg(long)]
        grace_s: Option<u32>,
    },
    /// Delete an app for good
    #[command(after_help = "Example:\n  arcctl apps delete APP_KEY")]
    Delete { app_id: String },
    /// Replace the quotas (omitted = unlimited)
    #[command(after_help = "Example:\n  arcctl apps quotas APP_KEY --max-rooms 10 --max-participants 200")]
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
    #[command(after_help = "Example:\n  arcctl apps webhooks APP_KEY https://shop.example.com/arc")]
    Webhooks { app_id: String, urls: Vec<String> },
}

#[derive(Debug, Subcommand)]
enum Tokens {
    /// Mint an access token locally with the app's key and secret (no server needed)
    #[command(
        after_help = "Example:\n  ARC_APP_KEY=… ARC_APP_SECRET=… arcctl tokens mint --identity alice --room standup --grants join,publish,subscribe"
    )]
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
    #[command(after_help = "Example:\n  arcctl tokens revoke --app APP_KEY 0193…")]
    Revoke {
        #[arg(long)]
        app: String,
        jti: String,
    },
}

#[derive(Debug, Subcommand)]
enum Webhooks {
    /// List an app's deliveries
    #[command(alias = "deliveries", after_help = "Example:\n  arcctl webhooks list --app APP_KEY --state dead")]
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
    #[command(after_help = "Example:\n  arcctl webhooks redeliver wd_…")]
    Redeliver { delivery_id: String },
    /// Run a local webhook receiver: verifies each delivery's signature, prints one line per delivery
    #[command(after_help = "Example:\n  ARC_APP_SECRET=… arcctl webhooks listen --listen 127.0.0.1:9000 --body")]
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
    #[command(after_help = "Example:\n  arcctl rooms list --state open -o wide")]
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
    #[command(after_help = "Example:\n  arcctl rooms create --app APP_KEY standup --max-participants 12")]
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
    #[command(alias = "show", after_help = "Example:\n  arcctl rooms show rm_…")]
    Get { room_id: String },
    /// Close a room for everyone in it
    #[command(after_help = "Example:\n  arcctl rooms close rm_…")]
    Close { room_id: String },
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

/// A failure with its exit code (the list is in [`TOP_HELP`]).
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
    const USAGE: u8 = 2;
    const UNREACHABLE: u8 = 3;
    const NOT_ALLOWED: u8 = 4;
    const NOT_FOUND: u8 = 5;

    /// Bad usage that clap cannot see (an unknown context, a bad value).
    fn usage(message: String) -> Self {
        Self { exit: Self::USAGE, message }
    }

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
            other => bail!(Failure::usage(format!(
                "unknown grant {other:?}; known: join, publish, subscribe, publish_data, admin, record"
            ))),
        }
    }
    Ok(g)
}

/// `--can publish,subscribe,publish_data` (or `none`) as the API's permissions body.
fn parse_permissions(names: &[String]) -> Result<Value> {
    let (mut publish, mut subscribe, mut publish_data) = (false, false, false);
    for n in names {
        match n.trim() {
            "publish" => publish = true,
            "subscribe" => subscribe = true,
            "publish_data" => publish_data = true,
            "none" if names.len() == 1 => {}
            other => bail!(Failure::usage(format!(
                "unknown permission {other:?}; known: publish, subscribe, publish_data, or none alone"
            ))),
        }
    }
    Ok(serde_json::json!({ "publish": publish, "subscribe": subscribe, "publish_data": publish_data }))
}

/// A path segment, percent-encoded (identities and names are the caller's).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        // The reader went away (`arcctl … | head`): nothing to say.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // One readable line with its causes, never a backtrace.
            eprintln!("{} {e:#}", output::error_prefix());
            let exit = e.chain().find_map(|c| c.downcast_ref::<Failure>()).map_or(1, |f| f.exit);
            std::process::ExitCode::from(exit)
        }
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    output::set_colour(cli.color);
    let format = if cli.json { Format::Json } else { cli.output };
    // Commands that need no server.
    match &cli.command {
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails
            // (e.g. `arcctl completions bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "arcctl", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
            return Ok(());
        }
        Command::Context(cmd) => return context(cmd, format),
        _ => {}
    }
    let config_path = config::path()?;
    let config = config::Config::load(&config_path)?;
    let target =
        config.resolve(cli.url.as_deref(), cli.admin_key.as_deref(), cli.ca_file.as_deref(), cli.context.as_deref())?;
    let api = Api { http: http_client(target.ca_file.as_deref())?, url: target.url, key: target.key };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let out = match &cli.command {
        Command::Completions { .. } | Command::Context(_) => return Ok(()),
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
                q.push_str(&format!("&app_id={}", seg(a)));
            }
            if let Some(s) = state {
                q.push_str(&format!("&state={}", seg(s)));
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
        Command::Rooms(Rooms::Get { room_id }) => api.call(get, &format!("/v1/rooms/{}", seg(room_id)), None).await?,
        Command::Rooms(Rooms::Close { room_id }) => {
            api.call(post, &format!("/v1/rooms/{}/close", seg(room_id)), None).await?
        }
        Command::Participants(p) => {
            let one = |room: &str, identity: &str| format!("/v1/rooms/{}/participants/{}", seg(room), seg(identity));
            match p {
                Participants::List { room_id } => {
                    api.call(get, &format!("/v1/rooms/{}/participants", seg(room_id)), None).await?
                }
                Participants::Show { room_id, identity } => api.call(get, &one(room_id, identity), None).await?,
                Participants::Remove { room_id, identity, sid } => {
                    let mut path = one(room_id, identity);
                    if let Some(sid) = sid {
                        path.push_str(&format!("?sid={}", seg(sid)));
                    }
                    api.call(reqwest::Method::DELETE, &path, None).await?
                }
                Participants::Kick { room_id, identity } => {
                    api.call(post, &format!("{}/kick", one(room_id, identity)), None).await?
                }
                Participants::Mute { room_id, track_id } | Participants::Unmute { room_id, track_id } => {
                    let muted = matches!(p, Participants::Mute { .. });
                    let path = format!("/v1/rooms/{}/tracks/{}/mute", seg(room_id), seg(track_id));
                    api.call(post, &path, Some(serde_json::json!({ "muted": muted }))).await?
                }
                Participants::Permissions { room_id, identity, can } => {
                    let body = parse_permissions(can)?;
                    api.call(put, &format!("{}/permissions", one(room_id, identity)), Some(body)).await?
                }
            }
        }
        Command::Nodes(Nodes::List) => api.call(get, "/v1/nodes", None).await?,
        Command::Nodes(Nodes::Show { node_id }) => {
            let mut list = api.call(get, "/v1/nodes", None).await?;
            let found = list["nodes"].as_array_mut().and_then(|nodes| {
                let i = nodes.iter().position(|n| n["node_id"] == node_id.as_str())?;
                Some(nodes.swap_remove(i))
            });
            match found {
                Some(node) => node,
                None => {
                    bail!(Failure { exit: Failure::NOT_FOUND, message: format!("no media node named {node_id:?}") })
                }
            }
        }
        Command::Nodes(Nodes::Drain { node_id }) => {
            api.call(post, &format!("/v1/nodes/{}/drain", seg(node_id)), None).await?
        }
        Command::Nodes(Nodes::Undrain { node_id }) => {
            api.call(post, &format!("/v1/nodes/{}/undrain", seg(node_id)), None).await?
        }
        Command::Apps(Apps::Create { name, webhooks, max_rooms, max_participants_per_room, max_participants }) => {
            let quotas = serde_json::json!({
                "max_rooms": max_rooms, "max_participants_per_room": max_participants_per_room,
                "max_participants": max_participants,
            });
            let body = serde_json::json!({ "name": name, "webhooks": webhooks, "quotas": quotas });
            api.call(post, "/v1/apps", Some(body)).await?
        }
        Command::Apps(Apps::List) => api.call(get, "/v1/apps", None).await?,
        Command::Apps(Apps::Get { app_id }) => api.call(get, &format!("/v1/apps/{}", seg(app_id)), None).await?,
        Command::Apps(Apps::Disable { app_id, reason }) => {
            let body = serde_json::json!({ "reason": reason });
            api.call(post, &format!("/v1/apps/{}/disable", seg(app_id)), Some(body)).await?
        }
        Command::Apps(Apps::Enable { app_id }) => {
            api.call(post, &format!("/v1/apps/{}/enable", seg(app_id)), None).await?
        }
        Command::Apps(Apps::RotateSecret { app_id, grace_s }) => {
            let body = serde_json::json!({ "grace_s": grace_s });
            api.call(post, &format!("/v1/apps/{}/rotate-secret", seg(app_id)), Some(body)).await?
        }
        Command::Apps(Apps::Delete { app_id }) => {
            api.call(reqwest::Method::DELETE, &format!("/v1/apps/{}", seg(app_id)), None).await?
        }
        Command::Apps(Apps::Quotas { app_id, max_rooms, max_participants_per_room, max_participants }) => {
            let body = serde_json::json!({
                "max_rooms": max_rooms, "max_participants_per_room": max_participants_per_room,
                "max_participants": max_participants,
            });
            api.call(put, &format!("/v1/apps/{}/quotas", seg(app_id)), Some(body)).await?
        }
        Command::Apps(Apps::Webhooks { app_id, urls }) => {
            let body = serde_json::json!({ "urls": urls });
            api.call(put, &format!("/v1/apps/{}/webhooks", seg(app_id)), Some(body)).await?
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
            .map_err(|e| Failure::usage(e.to_string()))?;
            if format.is_table() {
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
            let mut q = format!("/v1/apps/{}/webhooks/deliveries?limit={limit}", seg(app));
            if let Some(s) = state {
                q.push_str(&format!("&state={}", seg(s)));
            }
            api.call(get, &q, None).await?
        }
        Command::Webhooks(Webhooks::Redeliver { delivery_id }) => {
            api.call(post, &format!("/v1/webhooks/deliveries/{}/redeliver", seg(delivery_id)), None).await?
        }
        Command::Webhooks(Webhooks::Listen { listen, app_secret, body }) => {
            return listen::run(*listen, app_secret, *body).await;
        }
        Command::Events(Events::Tail { lines, follow, aggregate, types, since }) => {
            let query = events::Query { aggregate: aggregate.clone(), types: types.clone(), since: since.clone() };
            return events::tail(&api, &query, *lines, *follow, format).await;
        }
        Command::Events(Events::Show { position }) => api.call(get, &format!("/v1/events/{position}"), None).await?,
        Command::Projections(Projections::List) => return projections::list(&api, format).await,
        Command::Projections(Projections::Status { name }) => return projections::show(&api, name, format).await,
        Command::Projections(Projections::Rebuild { name, no_wait }) => {
            return projections::rebuild(&api, name, *no_wait, format).await;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if !format.is_table() {
        output::document(&mut stdout, format, &out)?;
        return Ok(());
    }
    render(&mut stdout, &cli.command, format, &out)?;
    Ok(())
}

/// `arcctl context …`: edits the config file; prints no key.
fn context(cmd: &ContextCmd, format: Format) -> Result<()> {
    let path = config::path()?;
    let mut config = config::Config::load(&path)?;
    match cmd {
        ContextCmd::Add { name, url, key, key_file, ca_file, make_current } => {
            let admin_key = match (key, key_file) {
                (Some(k), _) => Some(k.trim().to_owned()),
                (None, Some(file)) => {
                    let k = std::fs::read_to_string(file)
                        .map_err(|e| Failure::usage(format!("reading the key file {}: {e}", file.display())))?;
                    Some(k.trim().to_owned())
                }
                (None, None) => None,
            };
            if admin_key.as_deref() == Some("") {
                bail!(Failure::usage("the admin key is empty".into()));
            }
            let ca_file = match ca_file {
                Some(file) => Some(
                    std::path::absolute(file)
                        .map_err(|e| Failure::usage(format!("the CA file {}: {e}", file.display())))?,
                ),
                None => None,
            };
            if let Some(file) = &ca_file {
                // Refused now rather than at the first command.
                http_client(Some(file))?;
            }
            config.add(name, config::Context { url: url.clone(), admin_key, ca_file })?;
            if *make_current || config.current.is_none() {
                config.use_context(name)?;
            }
            config.save(&path)?;
            let current = if config.current.as_deref() == Some(name) { " (current)" } else { "" };
            println!("context {name} saved in {}{current}", path.display());
        }
        ContextCmd::Use { name } => {
            config.use_context(name)?;
            config.save(&path)?;
            println!("current context: {name}");
        }
        ContextCmd::Remove { name } => {
            config.remove(name)?;
            config.save(&path)?;
            println!("context {name} removed");
        }
        ContextCmd::List => {
            let items: Vec<Value> = config
                .contexts
                .iter()
                .map(|(name, c)| {
                    serde_json::json!({
                        "name": name, "url": c.url, "admin_key": c.admin_key.is_some(), "ca_file": c.ca_file,
                        "current": config.current.as_deref() == Some(name.as_str()),
                    })
                })
                .collect();
            let mut stdout = std::io::stdout().lock();
            if !format.is_table() {
                output::document(&mut stdout, format, &serde_json::json!({ "contexts": items, "file": path }))?;
                return Ok(());
            }
            let cols = [
                Col::new("CURRENT", |c| if c["current"] == true { "*".into() } else { String::new() }),
                Col::new("NAME", |c| text(&c["name"])),
                Col::new("URL", |c| text(&c["url"])),
                Col::new("ADMIN KEY", |c| if c["admin_key"] == true { "set".into() } else { "-".into() }),
            ];
            output::list(&mut stdout, format, &items, &cols, &format!("no contexts in {}", path.display()))?;
        }
    }
    Ok(())
}

/// The HTTP client, trusting `ca_file`'s certificates besides the system's roots.
fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| Failure::usage(format!("reading the CA file {}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Failure::usage(format!("the CA file {} holds no PEM certificate", path.display())))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| anyhow::anyhow!("making the HTTP client: {e}"))
}

fn items(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

fn mbits(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |b| format!("{:.1}", b / 1e6))
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |c| format!("{c:.0}"))
}

const NODE_COLS: [Col; 11] = [
    Col::new("NODE", |n| text(&n["node_id"])),
    Col::new("STATE", |n| text(&n["state"])),
    Col::new("SESSIONS", |n| text(&n["sessions"])),
    Col::new("CAPACITY", |n| text(&n["capacity"])),
    Col::new("CPU %", |n| percent(&n["cpu_percent"])),
    Col::new("MBIT/S OUT", |n| mbits(&n["bits_out_per_s"])),
    Col::new("LAST SEEN", |n| text(&n["last_seen_at"])),
    Col::wide("MBIT/S IN", |n| mbits(&n["bits_in_per_s"])),
    Col::wide("TRACKS", |n| text(&n["tracks"])),
    Col::wide("ARCH/CORES", |n| format!("{}/{}", text(&n["arch"]), text(&n["cores"]))),
    Col::wide("ADDRESS", |n| text(&n["address"])),
];

/// Tables and screens for people (`-o table` / `-o wide`).
fn render(out: &mut impl std::io::Write, command: &Command, format: Format, v: &Value) -> Result<()> {
    match command {
        Command::Status => status_screen(out, format, v)?,
        Command::Rooms(Rooms::List { .. }) => {
            let cols = [
                Col::new("ROOM", |r| text(&r["room_id"])),
                Col::new("APP", |r| text(&r["app_id"])),
                Col::new("NAME", |r| text(&r["name"])),
                Col::new("STATE", |r| text(&r["state"])),
                Col::new("PEOPLE", |r| text(&r["participant_count"])),
                Col::new("CREATED", |r| text(&r["created_at"])),
                Col::wide("MAX", |r| text(&r["max_participants"])),
                Col::wide("EMPTY TIMEOUT S", |r| text(&r["empty_timeout_s"])),
                Col::wide("CLOSED", |r| text(&r["closed_at"])),
                Col::wide("REASON", |r| text(&r["close_reason"])),
                Col::wide("SEQ", |r| text(&r["seq"])),
            ];
            output::list(out, format, &items(v, "rooms"), &cols, "no rooms")?;
        }
        Command::Participants(Participants::List { .. }) => {
            let cols = [
                Col::new("IDENTITY", |p| text(&p["identity"])),
                Col::new("NAME", |p| text(&p["name"])),
                Col::new("STATE", |p| text(&p["state"])),
                Col::new("TRACKS", |p| {
                    let tracks = p["tracks"].as_array().map(Vec::as_slice).unwrap_or_default();
                    let live: Vec<String> = tracks
                        .iter()
                        .filter(|t| t["state"] != "unpublished")
                        .map(|t| {
                            let muted = if t["muted"] == true { " (muted)" } else { "" };
                            format!("{}{muted}", text(&t["kind"]))
                        })
                        .collect();
                    if live.is_empty() { "-".into() } else { live.join(",") }
                }),
                Col::new("NODE", |p| text(&p["node_id"])),
                Col::new("JOINED", |p| text(&p["joined_at"])),
                Col::wide("SID", |p| text(&p["sid"])),
                Col::wide("CAN", |p| {
                    let perms = &p["permissions"];
                    if perms.is_null() {
                        return "token's".into();
                    }
                    let can: Vec<&str> =
                        ["publish", "subscribe", "publish_data"].into_iter().filter(|k| perms[*k] == true).collect();
                    if can.is_empty() { "none".into() } else { can.join(",") }
                }),
                Col::wide("TRACK IDS", |p| {
                    let ids: Vec<String> =
                        p["tracks"].as_array().into_iter().flatten().map(|t| text(&t["track_id"])).collect();
                    if ids.is_empty() { "-".into() } else { ids.join(",") }
                }),
                Col::wide("METADATA", |p| text(&p["metadata"])),
            ];
            output::list(out, format, &items(v, "participants"), &cols, "nobody is in the room")?;
        }
        Command::Nodes(Nodes::List) => output::list(out, format, &items(v, "nodes"), &NODE_COLS, "no media nodes")?,
        Command::Nodes(Nodes::Drain { node_id }) => writeln!(out, "node {node_id} draining: no new sessions")?,
        Command::Nodes(Nodes::Undrain { node_id }) => writeln!(out, "node {node_id} takes sessions again")?,
        Command::Apps(Apps::Create { .. }) => {
            writeln!(out, "app created: {}", text(&v["app"]["name"]))?;
            writeln!(out, "  app key     {}", text(&v["app_key"]))?;
            writeln!(out, "  app secret  {}", text(&v["app_secret"]))?;
            writeln!(out, "The secret is shown only now; store it safely.")?;
        }
        Command::Apps(Apps::List) => {
            let cols = [
                Col::new("APP KEY", |a| text(&a["app_id"])),
                Col::new("NAME", |a| text(&a["name"])),
                Col::new("STATE", |a| text(&a["state"])),
                Col::new("ROOMS", |a| text(&a["usage"]["rooms_open"])),
                Col::new("PEOPLE", |a| text(&a["usage"]["participants"])),
                Col::wide("MAX ROOMS", |a| text(&a["quotas"]["max_rooms"])),
                Col::wide("MAX PEOPLE", |a| text(&a["quotas"]["max_participants"])),
                Col::wide("PER ROOM", |a| text(&a["quotas"]["max_participants_per_room"])),
                Col::wide("WEBHOOKS", |a| a["webhooks"].as_array().map_or(0, Vec::len).to_string()),
                Col::wide("CREATED", |a| text(&a["created_at"])),
            ];
            output::list(out, format, &items(v, "apps"), &cols, "no apps")?;
        }
        Command::Webhooks(Webhooks::List { .. }) => {
            let cols = [
                Col::new("DELIVERY", |d| text(&d["delivery_id"])),
                Col::new("EVENT", |d| text(&d["event_type"])),
                Col::new("STATE", |d| text(&d["state"])),
                Col::new("ATTEMPTS", |d| text(&d["attempts"])),
                Col::new("LAST", |d| match (&d["last_status"], &d["last_error"]) {
                    (Value::Null, Value::Null) => "-".into(),
                    (s, Value::Null) => text(s),
                    (_, e) => text(e),
                }),
                Col::new("URL", |d| text(&d["url"])),
                Col::wide("NEXT ATTEMPT", |d| text(&d["next_attempt_at"])),
                Col::wide("CREATED", |d| text(&d["created_at"])),
                Col::wide("EVENT ID", |d| text(&d["event_id"])),
            ];
            output::list(out, format, &items(v, "deliveries"), &cols, "no deliveries")?;
        }
        // One object: as YAML, which reads well.
        _ => out.write_all(output::yaml(v).as_bytes())?,
    }
    Ok(())
}

/// `arcctl status`: one screen.
fn status_screen(out: &mut impl std::io::Write, format: Format, v: &Value) -> Result<()> {
    if v["log_reachable"] == false {
        writeln!(
            out,
            "arc-control {} · {} log UNREACHABLE ({}): writes answer 503, reads may be stale",
            text(&v["version"]),
            text(&v["log_backend"]),
            text(&v["log_error"])
        )?;
    } else {
        writeln!(
            out,
            "arc-control {} · {} log, head {} · up {} s",
            text(&v["version"]),
            text(&v["log_backend"]),
            v["log_head"],
            v["uptime_s"]
        )?;
    }
    writeln!(
        out,
        "rooms {} open · participants {} · tracks {} · nodes {} live · webhooks {} pending, {} dead",
        v["rooms_open"],
        v["participants_active"],
        v["tracks_published"],
        v["nodes_up"],
        v["webhooks_pending"],
        v["webhooks_dead"]
    )?;
    writeln!(out)?;
    let projections = projections::with_states(v);
    output::list(out, format, &projections, &projections::COLS, "no projections")?;
    writeln!(out)?;
    match v["nodes"].as_array() {
        None => writeln!(out, "(nodes: give the admin key, --admin-key or ARC_ADMIN_KEY, to see them)")?,
        Some(nodes) => output::list(out, format, nodes, &NODE_COLS, "no media nodes")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_an_example_in_its_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.has_subcommands() {
                    walk(sub, &path, missing);
                } else if !sub.get_after_help().is_some_and(|h| h.to_string().contains("Example")) {
                    missing.push(path);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "arcctl", &mut missing);
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
        Cli::command().debug_assert();
    }

    #[test]
    fn permissions_and_path_segments() {
        let can = |v: &[&str]| parse_permissions(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            can(&["subscribe"]).expect("ok"),
            serde_json::json!({"publish": false, "subscribe": true, "publish_data": false})
        );
        assert_eq!(can(&["none"]).expect("ok")["publish"], false);
        assert!(can(&["none", "publish"]).is_err());
        assert!(can(&["fly"]).is_err());
        assert_eq!(seg("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(seg("rm_0193-x.y~z"), "rm_0193-x.y~z");
    }
}
