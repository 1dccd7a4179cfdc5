//! What an admin key did that no other aggregate's event says (a rebuild
//! asked for, a token minted for an app), appended to the key's `operator`
//! aggregate with the key's name as the actor. Everything else an admin key
//! changes is already an event of its aggregate with that actor.

use arc_eventlog::{AppendRequest, Expected, Position};
use arc_events::{Actor, AggregateKind, AggregateRef, Event, RawEvent};

use super::{Services, UseCaseError, UseCaseResult};

/// Appends `event` to the operator aggregate of the admin key `actor`
/// names. Other actors (apps, participants, the system) are not operators:
/// nothing is appended and `None` is answered.
pub async fn record(s: &Services, actor: &Actor, event: impl Into<Event>) -> UseCaseResult<Option<Position>> {
    let Actor::Admin { name: Some(name) } = actor else { return Ok(None) };
    let aggregate = AggregateRef::new(AggregateKind::Operator, name)
        .map_err(|e| UseCaseError::internal(format!("admin key name {name:?}: {e}")))?;
    let meta = super::command_meta(actor);
    let raw = RawEvent::encode(&aggregate, 0, &event.into(), &meta)
        .map_err(|e| UseCaseError::internal(format!("encoding an operator event: {e}")))?;
    let appended = s.log.append(AppendRequest { aggregate, expected: Expected::Any, events: vec![raw] }).await?;
    Ok(Some(appended.last))
}
