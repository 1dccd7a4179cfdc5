//! `arcctl projections`: the read models' progress, and an online rebuild
//! followed with a progress bar (events/s and an ETA) until it has caught
//! up with the log.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::output::{self, Col, Format, text};
use crate::{Api, Failure, seg};

/// How often the rebuild's progress is read.
const POLL: Duration = Duration::from_millis(250);
/// How long the writer may take to start a requested rebuild (it looks every second).
const START_MAX: Duration = Duration::from_secs(30);
/// After the writer started, how long a caught-up answer must wait before it
/// counts when the reset itself was not seen (a rebuild faster than one poll):
/// enough for every instance to have heard of the reset.
const SETTLE: Duration = Duration::from_millis(1500);

/// The columns of `projections list` (and of `status`'s projections).
pub(crate) const COLS: [Col; 8] = [
    Col::new("PROJECTION", |p| text(&p["name"])),
    Col::new("POSITION", |p| text(&p["position"])),
    Col::new("EVENTS", |p| text(&p["events"])),
    Col::new("BEHIND", |p| match p["behind"].as_u64() {
        Some(n) if n >= 10_000 => "10000+".to_owned(),
        Some(n) => n.to_string(),
        None => "?".into(),
    }),
    Col::new("STATE", |p| text(&p["_state"])),
    Col::new("FAILURES", |p| p["failures"].as_u64().map_or_else(|| "?".to_owned(), |n| n.to_string())),
    Col::wide("REBUILD", |p| if p["rebuild_pending"] == true { "requested".into() } else { "-".into() }),
    Col::wide("LAST ERROR", |p| match p["last_error"].as_str() {
        // One line in a table: the full text is in `projections status NAME`.
        Some(e) => e.chars().take(60).collect::<String>().replace(['\n', '\r'], " "),
        None => "-".into(),
    }),
];

/// The status's projections, each with a `_state` for the table.
pub(crate) fn with_states(status: &Value) -> Vec<Value> {
    let reachable = status["log_reachable"] != false;
    let mut projections = status["projections"].as_array().cloned().unwrap_or_default();
    for p in &mut projections {
        let state = match (p["caught_up"] == true, reachable, p["rebuild_pending"] == true) {
            (_, _, true) => "rebuild requested",
            (true, _, false) => "caught up",
            (false, true, false) => "catching up",
            (false, false, false) => "stale",
        };
        p["_state"] = state.into();
    }
    projections
}

fn find<'a>(status: &'a Value, name: &str) -> Result<&'a Value> {
    match status["projections"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name)) {
        Some(p) => Ok(p),
        None => {
            let known: Vec<String> =
                status["projections"].as_array().into_iter().flatten().map(|p| text(&p["name"])).collect();
            bail!(Failure {
                exit: Failure::NOT_FOUND,
                message: format!("no projection {name:?}; known: {}", known.join(", ")),
            })
        }
    }
}

/// `projections list`.
pub(crate) async fn list(api: &Api, format: Format) -> Result<()> {
    let status = api.call(reqwest::Method::GET, "/v1/status", None).await?;
    let mut out = std::io::stdout().lock();
    if !format.is_table() {
        output::document(&mut out, format, &serde_json::json!({ "projections": status["projections"] }))?;
        return Ok(());
    }
    output::list(&mut out, format, &with_states(&status), &COLS, "no projections")?;
    Ok(())
}

/// `projections status NAME`.
pub(crate) async fn show(api: &Api, name: &str, format: Format) -> Result<()> {
    let status = api.call(reqwest::Method::GET, "/v1/status", None).await?;
    let mut p = find(&status, name)?.clone();
    p["log_head"] = status["log_head"].clone();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => output::document(&mut out, format, &p)?,
        _ => out.write_all(output::yaml(&p).as_bytes())?,
    }
    Ok(())
}

/// `projections rebuild NAME`: asks for it, then (unless `no_wait`) follows
/// it until the projection has caught up again.
pub(crate) async fn rebuild(api: &Api, name: &str, no_wait: bool, format: Format) -> Result<()> {
    let get = reqwest::Method::GET;
    let before = find(&api.call(get.clone(), "/v1/status", None).await?, name)?["events"].as_u64().unwrap_or(0);
    let asked = Instant::now();
    api.call(reqwest::Method::POST, &format!("/v1/projections/{}/rebuild", seg(name)), None).await?;
    if no_wait {
        let mut out = std::io::stdout().lock();
        match format {
            Format::Table | Format::Wide => {
                writeln!(out, "rebuild of {name} requested; follow it with: arcctl projections list")?
            }
            _ => output::document(&mut out, format, &serde_json::json!({ "name": name, "requested": true }))?,
        }
        return Ok(());
    }
    let bar = if std::io::stderr().is_terminal() && format.is_table() {
        indicatif::ProgressBar::new(1000)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}%  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    bar.set_message("waiting for the projection's writer to start…");
    bar.enable_steady_tick(Duration::from_millis(120));
    // `started`: when the writer's reset was seen (the request row gone);
    // `dropped`: the events count fell below what it was (the reset reached
    // the instance that answers).
    let mut started: Option<Instant> = None;
    let mut dropped = before == 0;
    // When it was first seen caught up since the reset (the time reported).
    let mut caught: Option<Duration> = None;
    let (events, took) = loop {
        tokio::time::sleep(POLL).await;
        let status = api.call(get.clone(), "/v1/status", None).await?;
        let p = find(&status, name)?;
        let events = p["events"].as_u64().unwrap_or(0);
        let Some(t0) = started else {
            if p["rebuild_pending"] != true {
                started = Some(Instant::now());
            } else if asked.elapsed() > START_MAX {
                bar.abandon();
                bail!(
                    "the rebuild of {name} was requested but did not start within {}s: is an arc-control instance \
                     running (the projection's writer starts it)?",
                    START_MAX.as_secs()
                );
            }
            continue;
        };
        if events < before && !dropped {
            // The reset reached this instance only now: what it said before is void.
            dropped = true;
            caught = None;
        }
        let (position, head) = (p["position"].as_u64().unwrap_or(0), status["log_head"].as_u64().unwrap_or(0));
        let fraction = if head == 0 { 1.0 } else { (position as f64 / head as f64).min(1.0) };
        let elapsed = t0.elapsed().as_secs_f64().max(1e-3);
        let rate = events as f64 / elapsed;
        let eta = if fraction > 0.0 && fraction < 1.0 { elapsed * (1.0 - fraction) / fraction } else { 0.0 };
        bar.set_position((fraction * 1000.0) as u64);
        bar.set_message(format!("{events} events · {rate:.0} events/s · ETA {eta:.0} s"));
        if p["caught_up"] == true {
            let at = *caught.get_or_insert_with(|| t0.elapsed());
            if dropped || t0.elapsed() >= SETTLE {
                break (events, at.max(POLL));
            }
        } else {
            caught = None;
        }
        if status["log_reachable"] == false {
            bar.set_message(format!("{events} events · the log is unreachable; waiting"));
        }
    };
    bar.finish_and_clear();
    let seconds = took.as_secs_f64();
    let rate = events as f64 / seconds.max(1e-3);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Table | Format::Wide => {
            writeln!(out, "rebuilt {name}: {events} events in {seconds:.1} s ({rate:.0} events/s)")?
        }
        _ => output::document(
            &mut out,
            format,
            &serde_json::json!({ "name": name, "events": events, "seconds": seconds, "events_per_s": rate }),
        )?,
    }
    Ok(())
}
