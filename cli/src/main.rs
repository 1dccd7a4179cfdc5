//! `arcctl`: Arc's operations CLI. It talks to arc-control's REST API only.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "arcctl", version, about = "Operate an Arc control plane over its REST API")]
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
    /// Log head, projection progress, open rooms, live nodes
    Status,
    /// Rooms
    #[command(subcommand)]
    Rooms(Rooms),
    /// Media nodes
    #[command(subcommand)]
    Nodes(Nodes),
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
        /// Room id (generated when omitted)
        #[arg(long)]
        id: Option<String>,
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

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach arc-control at {}", self.url))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            bail!("{status}: {code}: {message}");
        }
        Ok(value)
    }
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
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    let api = Api { http: reqwest::Client::new(), url: cli.url.clone(), key: cli.admin_key.clone() };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let out = match &cli.command {
        Command::Status => api.call(get, "/v1/status", None).await?,
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
        Command::Rooms(Rooms::Create { app, name, id, max_participants, empty_timeout_s }) => {
            let body = serde_json::json!({
                "app_id": app, "name": name, "room_id": id,
                "max_participants": max_participants, "empty_timeout_s": empty_timeout_s,
            });
            api.call(post, "/v1/rooms", Some(body)).await?
        }
        Command::Rooms(Rooms::Get { room_id }) => api.call(get, &format!("/v1/rooms/{room_id}"), None).await?,
        Command::Rooms(Rooms::Close { room_id }) => api.call(post, &format!("/v1/rooms/{room_id}/close"), None).await?,
        Command::Nodes(Nodes::List) => api.call(get, "/v1/nodes", None).await?,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    match &cli.command {
        Command::Status => {
            println!(
                "arc-control {} · {} log, head {}",
                text(&out["version"]),
                text(&out["log_backend"]),
                out["log_head"]
            );
            println!("open rooms {} · live nodes {} · up {} s", out["rooms_open"], out["nodes_up"], out["uptime_s"]);
            let mut rows = vec![vec!["PROJECTION".into(), "POSITION".into(), "EVENTS".into(), "STATE".into()]];
            for p in out["projections"].as_array().into_iter().flatten() {
                let state = if p["caught_up"] == true { "caught up" } else { "catching up" };
                rows.push(vec![text(&p["name"]), text(&p["position"]), text(&p["events"]), state.into()]);
            }
            table(&rows);
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
        _ => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(())
}
