//! `arcctl events`: the log's last events, and a live follow over the
//! server-sent events of `GET /v1/events/follow` (reconnecting with
//! `Last-Event-ID` when the connection drops, so no event is missed or
//! printed twice).

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::output::Format;
use crate::{Api, Failure};

/// Filters and start, as given on the command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub(crate) aggregate: Option<String>,
    pub(crate) types: Vec<String>,
    pub(crate) since: Option<String>,
}

impl Query {
    /// The filter part of a query string (`&aggregate=…&type=…`).
    fn filters(&self) -> String {
        let mut q = String::new();
        if let Some(a) = &self.aggregate {
            q.push_str(&format!("&aggregate={}", encode(a)));
        }
        if !self.types.is_empty() {
            q.push_str(&format!("&type={}", encode(&self.types.join(","))));
        }
        q
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*,:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints the last `lines` events (or every event since `--since`), then,
/// with `follow`, new ones as they come.
pub(crate) async fn tail(api: &Api, query: &Query, lines: u32, follow: bool, format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut last = match &query.since {
        None => {
            let page =
                api.call(reqwest::Method::GET, &format!("/v1/events?tail={lines}{}", query.filters()), None).await?;
            print_events(&mut out, &page, format)?;
            page["head"].as_u64().unwrap_or(0)
        }
        Some(since) => {
            // Page forward from that moment to the head.
            let mut path = format!("/v1/events?since={}&limit=1000{}", encode(since), query.filters());
            loop {
                let page = api.call(reqwest::Method::GET, &path, None).await?;
                print_events(&mut out, &page, format)?;
                let (next, head) = (page["next"].as_u64().unwrap_or(0), page["head"].as_u64().unwrap_or(0));
                if next >= head {
                    break head;
                }
                path = format!("/v1/events?after={next}&limit=1000{}", query.filters());
            }
        }
    };
    drop(out);
    if !follow {
        return Ok(());
    }
    // Follow; on a dropped connection, come back after the last event seen.
    let mut failures = 0u32;
    loop {
        match follow_once(api, query, &mut last, format).await {
            Ok(()) => failures = 0,
            Err(e) => {
                // Refusals (bad filter, key) will not heal by retrying.
                if let Some(f) = e.downcast_ref::<Failure>()
                    && f.exit != Failure::UNREACHABLE
                {
                    return Err(e);
                }
                failures += 1;
                if failures == 1 {
                    eprintln!("arcctl: the follow was interrupted ({e:#}); reconnecting after position {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(if failures == 0 { 100 } else { 1000 })).await;
    }
}

/// One follow connection, until it ends; `last` moves with every event printed.
async fn follow_once(api: &Api, query: &Query, last: &mut u64, format: Format) -> Result<()> {
    let path = format!("/v1/events/follow?after={last}{}", query.filters());
    let req = api.request(reqwest::Method::GET, &path).header("accept", "text/event-stream");
    let mut resp = api.send(req).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        return Err(Failure::from_status(status, &body).into());
    }
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => bail!("the server ended the stream"),
            Err(e) => {
                return Err(Failure {
                    exit: Failure::UNREACHABLE,
                    message: format!("the stream broke: {}", crate::root_cause(&e)),
                }
                .into());
            }
        };
        buffer.extend_from_slice(&chunk);
        if buffer.len() > 16 * 1024 * 1024 {
            bail!("an event of more than 16 MiB: giving up");
        }
        // Complete SSE messages end with a blank line.
        while let Some(end) = find_blank_line(&buffer) {
            let message: Vec<u8> = buffer.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&message[..end.0]);
            let mut kind = "message";
            let mut data = String::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = if v.trim() == "arc" {
                        "arc"
                    } else if v.trim() == "error" {
                        "error"
                    } else {
                        "other"
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            match kind {
                "arc" => {
                    let event: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    let position = event["position"].as_u64().unwrap_or(0);
                    if position > *last {
                        *last = position;
                        let mut out = std::io::stdout().lock();
                        print_event(&mut out, &event, format)?;
                        out.flush()?;
                    }
                }
                "error" => bail!("the server ended the follow: {data}"),
                _ => {}
            }
        }
    }
}

/// Where the first message ends: (its text's end, after the blank line).
fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(c)) => Some(if a.0 < c.0 { a } else { c }),
        (a, c) => a.or(c),
    }
}

fn print_events(out: &mut impl Write, page: &Value, format: Format) -> Result<()> {
    for e in page["events"].as_array().into_iter().flatten() {
        print_event(out, e, format)?;
    }
    Ok(())
}

/// One line per event: position, time, type, aggregate#seq, its data (cut at
/// 160 characters); `-o json`: the event as one JSON line; `-o yaml`: one
/// YAML document per event.
fn print_event(out: &mut impl Write, e: &Value, format: Format) -> Result<()> {
    match format {
        Format::Json => {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
            return Ok(());
        }
        Format::Yaml => {
            writeln!(out, "---")?;
            out.write_all(crate::output::yaml(e).as_bytes())?;
            return Ok(());
        }
        Format::Table | Format::Wide => {}
    }
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
    let mut data = serde_json::to_string(&e["data"])?;
    if data.chars().count() > 160 {
        data = data.chars().take(159).collect::<String>() + "…";
    }
    writeln!(
        out,
        "{:>14}  {}  {:<30}  {}:{}#{}  {}",
        e["position"].as_u64().unwrap_or(0),
        s("occurred_at"),
        s("type"),
        s("aggregate_type"),
        s("aggregate_id"),
        e["seq"].as_u64().unwrap_or(0),
        data
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_end_at_the_first_blank_line() {
        assert_eq!(find_blank_line(b"event: arc\ndata: {}\n\nid: 2"), Some((19, 21)));
        assert_eq!(find_blank_line(b"data: x\r\n\r\n"), Some((7, 11)));
        assert_eq!(find_blank_line(b": keep-alive\n"), None);
        assert_eq!(encode("room.participant_*,room:rm 1"), "room.participant_*,room:rm%201");
    }
}
