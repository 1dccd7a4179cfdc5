//! Projections as operators drive them: ask for an online rebuild of one
//! read model. The projection's writer (on whichever instance holds its
//! lease) empties the table and replays the log from its start while the
//! service keeps running; until it has caught up, this and every other
//! instance report it behind (`/v1/status`, `/readyz` 503) and writes that
//! wait for their read models wait for it.

use arc_events::operator::ProjectionRebuildRequested;
use arc_events::{Actor, OperatorEvent};

use super::{Services, UseCaseError, UseCaseResult};
use crate::projection;

/// The projections that can be rebuilt online (every read model; the
/// webhook planner is not one: replaying it would plan deliveries again,
/// `arc-control rebuild webhooks` does it offline).
pub const REBUILDABLE: [&str; 6] = projection::ALL;

/// Asks for an online rebuild of projection `name`; an admin key's request
/// is recorded first (`operator.projection_rebuild_requested`).
pub async fn request_rebuild(s: &Services, actor: &Actor, name: &str) -> UseCaseResult<&'static str> {
    let Some(name) = REBUILDABLE.iter().copied().find(|n| *n == name) else {
        return Err(UseCaseError::NotFound {
            code: "projection_not_found",
            message: format!("no projection {name:?} can be rebuilt online; known: {}", REBUILDABLE.join(", ")),
        });
    };
    let audit = ProjectionRebuildRequested { projection: name.to_owned() };
    super::audit::record(s, actor, OperatorEvent::ProjectionRebuildRequested(audit)).await?;
    projection::request_rebuild(&s.db, name).await?;
    Ok(name)
}

/// The projections with a rebuild asked for and not started yet.
pub async fn pending(s: &Services) -> UseCaseResult<Vec<String>> {
    Ok(projection::rebuilds_pending(&s.db).await?)
}
