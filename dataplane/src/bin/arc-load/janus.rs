//! The Janus side of `arc-load --target janus`: the same workload through
//! Janus's VideoRoom plugin over its HTTP API (a session, one handle per
//! client, events by long poll). Kept apart from Arc's own client code: it
//! only turns "publish this offer" and "subscribe to these publishers" into
//! Janus requests.
//!
//! Publishers send `joinandconfigure` with their offer and get Janus's answer
//! in an event; subscribers `join` as subscribers of every publisher of the
//! room, get Janus's offer in an event, and `start` with their answer.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Longest wait for Janus's event answering a request.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// A Janus session with its event poller.
#[derive(Debug, Clone)]
pub(crate) struct Janus {
    http: reqwest::Client,
    base: String,
    session: u64,
    events: Rc<RefCell<HashMap<u64, VecDeque<Value>>>>,
    arrived: Rc<Notify>,
}

fn transaction() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

impl Janus {
    /// Creates a session at `base` (e.g. `http://127.0.0.1:8088/janus`) and
    /// starts long-polling its events.
    pub(crate) async fn connect(http: &reqwest::Client, base: &str) -> Result<Self> {
        let r: Value = http
            .post(base)
            .json(&json!({"janus": "create", "transaction": transaction()}))
            .send()
            .await
            .with_context(|| format!("creating a Janus session at {base} (is Janus running?)"))?
            .json()
            .await?;
        let session = r["data"]["id"].as_u64().with_context(|| format!("Janus session: {r}"))?;
        let janus = Self {
            http: http.clone(),
            base: base.trim_end_matches('/').to_owned(),
            session,
            events: Rc::default(),
            arrived: Rc::new(Notify::new()),
        };
        tokio::task::spawn_local(janus.clone().poll());
        Ok(janus)
    }

    /// Long-polls events and files them by handle.
    async fn poll(self) {
        loop {
            let url = format!("{}/{}?maxev=20", self.base, self.session);
            let events: Value = match self.http.get(&url).timeout(Duration::from_secs(40)).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let list = match events {
                Value::Array(list) => list,
                one => vec![one],
            };
            let mut filed = false;
            for e in list {
                if let Some(sender) = e["sender"].as_u64() {
                    self.events.borrow_mut().entry(sender).or_default().push_back(e);
                    filed = true;
                }
            }
            if filed {
                self.arrived.notify_waiters();
            }
        }
    }

    /// Waits for an event of `handle` carrying a JSEP description.
    async fn jsep(&self, handle: u64) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            let notified = self.arrived.notified();
            {
                let mut events = self.events.borrow_mut();
                if let Some(queue) = events.get_mut(&handle) {
                    while let Some(e) = queue.pop_front() {
                        if let Some(err) = e["plugindata"]["data"]["error"].as_str() {
                            bail!("Janus: {err}");
                        }
                        if e["jsep"].is_object() {
                            return Ok(e);
                        }
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("no answer from Janus within {EVENT_WAIT:?}");
            }
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let r: Value = self.http.post(format!("{}{path}", self.base)).json(&body).send().await?.json().await?;
        if r["janus"] == "error" {
            bail!("Janus: {}", r["error"]);
        }
        Ok(r)
    }

    /// A new plugin handle on the VideoRoom.
    pub(crate) async fn attach(&self) -> Result<u64> {
        let r = self
            .post(
                &format!("/{}", self.session),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()}),
            )
            .await?;
        r["data"]["id"].as_u64().with_context(|| format!("Janus attach: {r}"))
    }

    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut m = json!({"janus": "message", "transaction": transaction(), "body": body});
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        self.post(&format!("/{}/{handle}", self.session), m).await
    }

    /// Tells Janus the client has no more candidates (they are all in its SDP).
    async fn candidates_done(&self, handle: u64) -> Result<()> {
        self.post(
            &format!("/{}/{handle}", self.session),
            json!({"janus": "trickle", "transaction": transaction(), "candidate": {"completed": true}}),
        )
        .await?;
        Ok(())
    }

    /// Creates VideoRoom room `room` for `publishers` publishers (VP8, Opus).
    pub(crate) async fn create_room(&self, room: u64, publishers: usize) -> Result<()> {
        let handle = self.attach().await?;
        let r = self
            .message(
                handle,
                json!({"request": "create", "room": room, "publishers": publishers.max(1), "bitrate": 0,
                       "fir_freq": 0, "videocodec": "vp8", "audiocodec": "opus", "notify_joining": false}),
                None,
            )
            .await?;
        let data = &r["plugindata"]["data"];
        if data["videoroom"] != "created" && data["error_code"].as_u64() != Some(427) {
            bail!("Janus create room: {r}");
        }
        Ok(())
    }

    /// Publishes `offer` in `room`: answers Janus's SDP answer and the
    /// publisher's feed id.
    pub(crate) async fn publish(&self, room: u64, display: &str, offer: String) -> Result<(String, u64)> {
        let handle = self.attach().await?;
        let offer_copy = offer.clone();
        self.message(
            handle,
            json!({"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": display,
                   "audio": true, "video": true}),
            Some(json!({"type": "offer", "sdp": offer})),
        )
        .await?;
        self.candidates_done(handle).await?;
        let e = self.jsep(handle).await?;
        let feed = e["plugindata"]["data"]["id"].as_u64().context("publisher id in Janus's answer")?;
        let sdp = e["jsep"]["sdp"].as_str().context("Janus's SDP answer")?.to_owned();
        if std::env::var_os("ARC_LOAD_DEBUG").is_some() {
            eprintln!("offer:\n{offer_copy}\nJanus's answer:\n{sdp}");
        }
        Ok((sdp, feed))
    }

    /// Subscribes to `feeds` in `room`: answers Janus's SDP offer and the handle
    /// to [`Self::start`] with the answer.
    pub(crate) async fn subscribe(&self, room: u64, feeds: &[u64]) -> Result<(String, u64)> {
        let handle = self.attach().await?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        self.message(handle, json!({"request": "join", "room": room, "ptype": "subscriber", "streams": streams}), None)
            .await?;
        let e = self.jsep(handle).await?;
        let sdp = e["jsep"]["sdp"].as_str().context("Janus's SDP offer")?.to_owned();
        Ok((sdp, handle))
    }

    /// Starts a subscription with the subscriber's SDP answer.
    pub(crate) async fn start(&self, handle: u64, answer: String) -> Result<()> {
        self.message(handle, json!({"request": "start"}), Some(json!({"type": "answer", "sdp": answer}))).await?;
        self.candidates_done(handle).await
    }
}

/// The configuration files for a Janus that serves this test on loopback:
/// VideoRoom only, HTTP API on `http_port`, ICE-lite on loopback, RTP ports
/// in `rtp_ports`. Returns (file name, contents) pairs for a configs folder.
pub(crate) fn config_files(configs: &str, http_port: u16, rtp_ports: (u16, u16)) -> Vec<(&'static str, String)> {
    let lib = "/usr/lib/x86_64-linux-gnu/janus";
    vec![
        (
            "janus.jcfg",
            format!(
                "general: {{\n  configs_folder = \"{configs}\"\n  plugins_folder = \"{lib}/plugins\"\n  \
                 transports_folder = \"{lib}/transports\"\n  events_folder = \"{lib}/events\"\n  \
                 loggers_folder = \"{lib}/loggers\"\n  debug_level = 3\n  admin_secret = \"arc-load\"\n  \
                 protected_folders = []\n}}\n\
                 media: {{\n  rtp_port_range = \"{}-{}\"\n}}\n\
                 nat: {{\n  ice_lite = true\n  ice_enforce_list = \"lo\"\n  nice_debug = false\n}}\n\
                 plugins: {{\n  disable = \"libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
                 libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,\
                 libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so\"\n}}\n\
                 transports: {{\n  disable = \"libjanus_websockets.so,libjanus_mqtt.so,libjanus_nanomsg.so,\
                 libjanus_pfunix.so,libjanus_rabbitmq.so\"\n}}\n\
                 events: {{\n  broadcast = false\n}}\n\
                 loggers: {{\n  disable = \"libjanus_jsonlog.so\"\n}}\n",
                rtp_ports.0, rtp_ports.1
            ),
        ),
        (
            "janus.transport.http.jcfg",
            format!(
                "general: {{\n  json = \"compact\"\n  base_path = \"/janus\"\n  http = true\n  port = {http_port}\n  \
                 interface = \"lo\"\n  https = false\n}}\nadmin: {{\n  admin_http = false\n}}\n"
            ),
        ),
        ("janus.plugin.videoroom.jcfg", "general: {\n}\n".to_owned()),
    ]
}
