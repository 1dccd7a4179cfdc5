//! Upcasting: rewriting the `data` of old event versions into the current shape
//! before any typed code sees it.
//!
//! Every event type is at version 1 today, so nothing needs rewriting. When a
//! payload changes shape, bump its `VERSION` and add a case here, e.g.
//! `("room.created", 1) => { data["max_participants"] = json!(null); data }`,
//! with a test that decodes a stored v1 record.

use std::borrow::Cow;

/// Rewrites `data` written as `version` of `event_type` into the current version.
pub(crate) fn upcast<'a>(event_type: &str, version: u16, data: &'a serde_json::Value) -> Cow<'a, serde_json::Value> {
    // No event type has a second version yet; a rewrite would return Cow::Owned.
    let _ = (event_type, version);
    Cow::Borrowed(data)
}
