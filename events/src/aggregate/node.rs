//! The media-node aggregate: register, drain, undrain, lost, deregister,
//! and the node's reports of the media it carries (facts on its own
//! aggregate, which the control plane checks and turns into room and track
//! events: a node's credentials reach no other aggregate).
//!
//! A node's periodic load samples are not events (they live on the load
//! board beside the log, `arc_eventlog::load`): the liveness janitor passes
//! the time of the latest one to [`NodeCommand::DeclareLostIfSilent`], and
//! the rule stays here. Logs written before that carry `node.heartbeat`
//! events; they still count as "seen".

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

use super::{Aggregate, Context};
use crate::envelope::AggregateKind;
use crate::event::{Event, NodeEvent};
use crate::node::{
    NodeDeregistered, NodeDraining, NodeLost, NodeRegistered, NodeSessionEnded, NodeSubscriptionEnded,
    NodeSubscriptionStarted, NodeTrackPublished, NodeTrackUnpublished, NodeUndrained,
};

/// How often a node reports its load (a heartbeat, on the load board).
pub const HEARTBEAT_INTERVAL_S: i64 = 2;
/// Missed heartbeats after which a node is declared lost.
pub const HEARTBEATS_MISSED_LOST: i64 = 3;
/// How long NATS must have had no responder on a node's request subject
/// (its process or connection gone), with no heartbeat since, before the
/// node is declared lost without waiting for its heartbeats to run out. A
/// node that reconnects to another NATS server is back well within it; a
/// slow node answers late, which is not "no responders" and never counts.
pub const UNREACHABLE_LOST_MS: i64 = 750;
/// Longest address or version string, in bytes.
pub const NODE_FIELD_LEN_MAX: usize = 256;
/// Most public IPs a node may announce.
pub const PUBLIC_IPS_MAX: usize = 16;

/// Longest codec name or free-form reason a node may report, in bytes.
pub const REPORT_TEXT_LEN_MAX: usize = 64;

/// What a node reports of the media it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeReport {
    TrackPublished(NodeTrackPublished),
    TrackUnpublished(NodeTrackUnpublished),
    SubscriptionStarted(NodeSubscriptionStarted),
    SubscriptionEnded(NodeSubscriptionEnded),
    SessionEnded(NodeSessionEnded),
}

impl From<NodeReport> for NodeEvent {
    fn from(r: NodeReport) -> Self {
        match r {
            NodeReport::TrackPublished(e) => e.into(),
            NodeReport::TrackUnpublished(e) => e.into(),
            NodeReport::SubscriptionStarted(e) => e.into(),
            NodeReport::SubscriptionEnded(e) => e.into(),
            NodeReport::SessionEnded(e) => e.into(),
        }
    }
}

/// Lifecycle of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NodeStatus {
    #[default]
    Absent,
    Up,
    Draining,
    Lost,
    Deregistered,
}

/// The state `decide` needs.
///
/// Snapshotted (serde, `SNAPSHOT_VERSION`): long-lived, its history grows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub status: NodeStatus,
    pub info: Option<NodeRegistered>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// What can be asked of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeCommand {
    Register(NodeRegistered),
    Drain {
        reason: String,
    },
    Undrain,
    /// Declare the node lost if it missed [`HEARTBEATS_MISSED_LOST`]
    /// heartbeats: nothing seen of it since its registration, nor a load
    /// sample (`last_sample_at`, from the load board), for that long; or if
    /// nothing has answered on its request subject since `unreachable_since`
    /// (every probe since found no responder), for [`UNREACHABLE_LOST_MS`],
    /// and it has not been seen since.
    DeclareLostIfSilent {
        last_sample_at: Option<DateTime<Utc>>,
        unreachable_since: Option<DateTime<Utc>>,
    },
    Deregister,
    /// Record what the node saw happen to its media (any time after its
    /// first registration: a node declared lost still reports its sessions'
    /// ends, and the control plane judges each report).
    Report(NodeReport),
}

/// Why a node command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// The node has not registered (or deregistered).
    #[error("node is not registered")]
    NotRegistered,
    /// The node was declared lost; it must register again.
    #[error("node was declared lost; register again")]
    Lost,
    /// A field of the registration is out of bounds.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn check_len(field: &'static str, value: &str) -> Result<(), NodeError> {
    if value.is_empty() || value.len() > NODE_FIELD_LEN_MAX {
        return Err(NodeError::Invalid { field, reason: format!("must be 1..={NODE_FIELD_LEN_MAX} bytes") });
    }
    Ok(())
}

impl Node {
    fn require_live(&self) -> Result<(), NodeError> {
        match self.status {
            NodeStatus::Up | NodeStatus::Draining => Ok(()),
            NodeStatus::Lost => Err(NodeError::Lost),
            NodeStatus::Absent | NodeStatus::Deregistered => Err(NodeError::NotRegistered),
        }
    }
}

impl Aggregate for Node {
    const KIND: AggregateKind = AggregateKind::Node;
    type Event = NodeEvent;
    type Command = NodeCommand;
    type Error = NodeError;

    fn decide(&self, command: &NodeCommand, ctx: &Context) -> Result<Vec<NodeEvent>, NodeError> {
        match command {
            // Registering again (a restart) is always allowed: it starts a new incarnation.
            NodeCommand::Register(info) => {
                check_len("address", &info.address)?;
                check_len("arch", &info.arch)?;
                check_len("version", &info.version)?;
                if info.public_ips.len() > PUBLIC_IPS_MAX {
                    return Err(NodeError::Invalid {
                        field: "public_ips",
                        reason: format!("at most {PUBLIC_IPS_MAX}"),
                    });
                }
                for ip in &info.public_ips {
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        return Err(NodeError::Invalid { field: "public_ips", reason: format!("{ip:?} is not an IP") });
                    }
                }
                if info.capacity == 0 {
                    return Err(NodeError::Invalid { field: "capacity", reason: "must be at least 1".into() });
                }
                Ok(vec![info.clone().into()])
            }
            NodeCommand::Drain { reason } => {
                self.require_live()?;
                if self.status == NodeStatus::Draining {
                    return Ok(vec![]);
                }
                Ok(vec![NodeDraining { reason: reason.clone() }.into()])
            }
            NodeCommand::Undrain => {
                self.require_live()?;
                if self.status == NodeStatus::Up {
                    return Ok(vec![]);
                }
                Ok(vec![NodeUndrained {}.into()])
            }
            NodeCommand::DeclareLostIfSilent { last_sample_at, unreachable_since } => {
                let (Ok(()), Some(registered_seen)) = (self.require_live(), self.last_seen_at) else {
                    return Ok(vec![]);
                };
                // A sample from before the last registration is older still: max.
                let last_seen_at = last_sample_at.map_or(registered_seen, |s| s.max(registered_seen));
                let silent_for = ctx.now - last_seen_at;
                if silent_for >= Duration::seconds(HEARTBEAT_INTERVAL_S * HEARTBEATS_MISSED_LOST) {
                    return Ok(vec![NodeLost { last_seen_at, unreachable_since: None }.into()]);
                }
                // Unreachable, and not seen since it became so (a node that
                // registered or reported after that is back).
                match unreachable_since {
                    Some(since)
                        if last_seen_at < *since && ctx.now - *since >= Duration::milliseconds(UNREACHABLE_LOST_MS) =>
                    {
                        Ok(vec![NodeLost { last_seen_at, unreachable_since: Some(*since) }.into()])
                    }
                    _ => Ok(vec![]),
                }
            }
            NodeCommand::Report(report) => {
                if self.status == NodeStatus::Absent {
                    return Err(NodeError::NotRegistered);
                }
                let text = match report {
                    NodeReport::TrackPublished(e) => Some(("codec", &e.track.codec)),
                    NodeReport::TrackUnpublished(NodeTrackUnpublished { reason, .. })
                    | NodeReport::SubscriptionEnded(NodeSubscriptionEnded { reason, .. }) => Some(("reason", reason)),
                    NodeReport::SubscriptionStarted(_) | NodeReport::SessionEnded(_) => None,
                };
                if let Some((field, value)) = text
                    && (value.is_empty() || value.len() > REPORT_TEXT_LEN_MAX)
                {
                    return Err(NodeError::Invalid {
                        field,
                        reason: format!("must be 1..={REPORT_TEXT_LEN_MAX} bytes"),
                    });
                }
                Ok(vec![report.clone().into()])
            }
            NodeCommand::Deregister => match self.status {
                NodeStatus::Up | NodeStatus::Draining => Ok(vec![NodeDeregistered {}.into()]),
                NodeStatus::Lost | NodeStatus::Deregistered => Ok(vec![]),
                NodeStatus::Absent => Err(NodeError::NotRegistered),
            },
        }
    }

    fn evolve(mut self, event: &NodeEvent, at: DateTime<Utc>) -> Self {
        match event {
            NodeEvent::Registered(info) => {
                self.status = NodeStatus::Up;
                self.info = Some(info.clone());
                self.last_seen_at = Some(at);
            }
            NodeEvent::Heartbeat(_) => self.last_seen_at = Some(at),
            NodeEvent::Draining(_) => self.status = NodeStatus::Draining,
            NodeEvent::Undrained(_) => self.status = NodeStatus::Up,
            NodeEvent::Lost(_) => self.status = NodeStatus::Lost,
            NodeEvent::Deregistered(_) => self.status = NodeStatus::Deregistered,
            // Reports are the control plane's to act on; the node's own state is unchanged.
            NodeEvent::TrackPublished(_)
            | NodeEvent::TrackUnpublished(_)
            | NodeEvent::SubscriptionStarted(_)
            | NodeEvent::SubscriptionEnded(_)
            | NodeEvent::SessionEnded(_) => {}
        }
        self
    }

    super::snapshot_with_serde!(1);

    fn narrow(event: Event) -> Option<NodeEvent> {
        match event {
            Event::Node(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::{given, t};

    fn registered() -> NodeRegistered {
        NodeRegistered {
            address: "10.0.0.5:7880".into(),
            public_ips: vec!["203.0.113.5".into()],
            arch: "aarch64".into(),
            cores: 64,
            capacity: 500,
            version: "0.1.0".into(),
        }
    }
    /// A heartbeat event, as logs written before the load board carry them.
    fn heartbeat() -> NodeEvent {
        crate::node::NodeHeartbeat { load: crate::node::NodeLoad::default() }.into()
    }

    fn silent(sample_at: Option<i64>) -> NodeCommand {
        NodeCommand::DeclareLostIfSilent { last_sample_at: sample_at.map(t), unreachable_since: None }
    }

    fn unreachable(sample_at: Option<i64>, since: i64) -> NodeCommand {
        NodeCommand::DeclareLostIfSilent { last_sample_at: sample_at.map(t), unreachable_since: Some(t(since)) }
    }

    #[test]
    fn lost_fast_when_nothing_answers_its_subject_and_it_was_not_seen_since() {
        let up = [(0, registered().into())];
        let lost = |seen: i64, since: i64| -> NodeEvent {
            NodeLost { last_seen_at: t(seen), unreachable_since: Some(t(since)) }.into()
        };
        // No responder since 3, last sample at 2: lost one second later, long before the heartbeats run out.
        assert_eq!(given::<Node>(&up).when(3, unreachable(Some(2), 3)), Ok(vec![]));
        assert_eq!(given::<Node>(&up).when(4, unreachable(Some(2), 3)), Ok(vec![lost(2, 3)]));
        // A sample since it became unreachable: it is back (it reconnected), not lost.
        assert_eq!(given::<Node>(&up).when(5, unreachable(Some(4), 3)), Ok(vec![]));
        // Registered again since: back too.
        let again = [(0, registered().into()), (4, registered().into())];
        assert_eq!(given::<Node>(&again).when(5, unreachable(Some(2), 3)), Ok(vec![]));
        // Heartbeats ran out anyway: lost, by the heartbeats.
        assert_eq!(
            given::<Node>(&up).when(9, unreachable(Some(2), 8)),
            Ok(vec![NodeLost { last_seen_at: t(2), unreachable_since: None }.into()])
        );
        // Lost already, or never registered: nothing more.
        let gone = [(0, registered().into()), (4, lost(2, 3))];
        assert_eq!(given::<Node>(&gone).when(6, unreachable(Some(2), 5)), Ok(vec![]));
        assert_eq!(given::<Node>(&[]).when(6, unreachable(None, 3)), Ok(vec![]));
    }

    #[test]
    fn registration_is_validated() {
        let mut bad = registered();
        bad.public_ips = vec!["not-an-ip".into()];
        assert!(matches!(
            given::<Node>(&[]).when(0, NodeCommand::Register(bad)),
            Err(NodeError::Invalid { field: "public_ips", .. })
        ));
        let mut bad = registered();
        bad.capacity = 0;
        assert!(matches!(given::<Node>(&[]).when(0, NodeCommand::Register(bad)), Err(NodeError::Invalid { .. })));
    }

    #[test]
    fn lost_after_three_missed_samples_then_must_reregister() {
        let up = [(0, registered().into())];
        // The latest sample (on the load board) is what counts.
        assert_eq!(given::<Node>(&up).when(7, silent(Some(2))), Ok(vec![]));
        assert_eq!(
            given::<Node>(&up).when(8, silent(Some(2))),
            Ok(vec![NodeLost { last_seen_at: t(2), unreachable_since: None }.into()])
        );
        // No sample yet: the registration counts as seen.
        assert_eq!(given::<Node>(&up).when(5, silent(None)), Ok(vec![]));
        assert_eq!(
            given::<Node>(&up).when(6, silent(None)),
            Ok(vec![NodeLost { last_seen_at: t(0), unreachable_since: None }.into()])
        );
        // A sample from before a re-registration does not make the node older.
        let again = [(0, registered().into()), (10, registered().into())];
        assert_eq!(given::<Node>(&again).when(12, silent(Some(1))), Ok(vec![]));
        // Logs from before the load board: their heartbeat events count.
        let old = [(0, registered().into()), (2, heartbeat())];
        assert_eq!(given::<Node>(&old).when(7, silent(None)), Ok(vec![]));
        assert_eq!(
            given::<Node>(&old).when(8, silent(None)),
            Ok(vec![NodeLost { last_seen_at: t(2), unreachable_since: None }.into()])
        );
        let lost = [(0, registered().into()), (8, NodeLost { last_seen_at: t(0), unreachable_since: None }.into())];
        assert_eq!(given::<Node>(&lost).when(9, silent(Some(9))), Ok(vec![]));
        assert_eq!(given::<Node>(&lost).when(9, NodeCommand::Drain { reason: "x".into() }), Err(NodeError::Lost));
        assert_eq!(given::<Node>(&lost).when(9, NodeCommand::Register(registered())), Ok(vec![registered().into()]));
    }

    #[test]
    fn drain_and_undrain_are_idempotent() {
        let up = [(0, registered().into())];
        let draining: NodeEvent = NodeDraining { reason: "sigterm".into() }.into();
        assert_eq!(
            given::<Node>(&up).when(1, NodeCommand::Drain { reason: "sigterm".into() }),
            Ok(vec![draining.clone()])
        );
        assert_eq!(given::<Node>(&up).when(1, NodeCommand::Undrain), Ok(vec![]));
        let drained = [(0, registered().into()), (1, draining)];
        assert_eq!(given::<Node>(&drained).when(2, NodeCommand::Drain { reason: "again".into() }), Ok(vec![]));
        assert_eq!(given::<Node>(&drained).when(2, NodeCommand::Undrain), Ok(vec![NodeUndrained {}.into()]));
        assert_eq!(given::<Node>(&drained).when(3, NodeCommand::Deregister), Ok(vec![NodeDeregistered {}.into()]));
    }

    #[test]
    fn reports_are_recorded_once_registered_even_when_lost_and_bounded() {
        use crate::ids::TrackId;
        let unpublished = |reason: &str| {
            NodeReport::TrackUnpublished(NodeTrackUnpublished {
                track_id: TrackId::parse("TR_a").expect("track id"),
                reason: reason.into(),
            })
        };
        let report = NodeCommand::Report(unpublished("client_left"));
        assert_eq!(given::<Node>(&[]).when(0, report.clone()), Err(NodeError::NotRegistered));
        let lost = [(0, registered().into()), (8, NodeLost { last_seen_at: t(0), unreachable_since: None }.into())];
        let recorded: NodeEvent = unpublished("client_left").into();
        assert_eq!(given::<Node>(&lost).when(9, report), Ok(vec![recorded.clone()]));
        // A report leaves the node as it was.
        let after = given::<Node>(&[(0, registered().into()), (1, recorded)]).state;
        assert_eq!(after, given::<Node>(&[(0, registered().into())]).state);
        let long = NodeCommand::Report(unpublished(&"x".repeat(REPORT_TEXT_LEN_MAX + 1)));
        assert!(matches!(given::<Node>(&lost).when(9, long), Err(NodeError::Invalid { field: "reason", .. })));
    }
}
