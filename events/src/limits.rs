//! The bounds on what clients send: one named constant each, used by every
//! check that enforces it (the aggregates, access tokens, the HTTP API, the
//! node protocol) and listed in the OpenAPI document ([`TABLE`]).

/// Longest room name, in bytes.
pub const ROOM_NAME_BYTES_MAX: usize = 256;
/// Longest participant display name, in bytes (in a join, a token or an admit).
pub const DISPLAY_NAME_BYTES_MAX: usize = 256;
/// Largest room or participant metadata, in bytes (in an update, a join or a
/// token; a token must also fit `token_max_bytes`).
pub const METADATA_BYTES_MAX: usize = 64 * 1024;
/// Longest identifier (participant identity, ids such as `rm_…`), in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Longest token id (`jti`), in bytes.
pub const JTI_BYTES_MAX: usize = 128;
/// Longest app key, in bytes.
pub const APP_KEY_BYTES_MAX: usize = 256;
/// Longest app name, in bytes.
pub const APP_NAME_BYTES_MAX: usize = 128;
/// Most webhook endpoints per app.
pub const WEBHOOK_URLS_MAX: usize = 8;
/// Longest webhook URL, in bytes.
pub const WEBHOOK_URL_BYTES_MAX: usize = 2048;
/// Longest reason (e.g. for disabling an app), in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// Longest grace period of a rotated-out app secret, in seconds (7 days).
pub const SECRET_GRACE_S_MAX: u32 = 7 * 24 * 3600;
/// Most participants in one room, whatever the room or the app asks for.
pub const PARTICIPANTS_PER_ROOM_MAX: u32 = 10_000;
/// Longest empty timeout of a room, in seconds (7 days).
pub const EMPTY_TIMEOUT_S_MAX: u32 = 7 * 24 * 3600;
/// Largest SDP offer (WHIP/WHEP), in bytes.
pub const SDP_OFFER_BYTES_MAX: usize = 64 * 1024;
/// Largest trickle-ICE fragment (WHIP/WHEP `PATCH`), in bytes.
pub const SDP_FRAGMENT_BYTES_MAX: usize = 16 * 1024;
/// Largest JSON request body, in bytes.
pub const REQUEST_BODY_BYTES_MAX: usize = 256 * 1024;
/// Largest access token, in bytes: the default of `arc-auth`'s token policy.
pub const TOKEN_BYTES_DEFAULT_MAX: usize = 8 * 1024;

// A token fits in a request, a fragment in an offer's bound.
const _: () = assert!(TOKEN_BYTES_DEFAULT_MAX <= REQUEST_BODY_BYTES_MAX);
const _: () = assert!(SDP_FRAGMENT_BYTES_MAX <= SDP_OFFER_BYTES_MAX);

/// One bound, for the documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The constant's name.
    pub name: &'static str,
    /// What it bounds.
    pub what: &'static str,
    pub value: u64,
    pub unit: &'static str,
}

/// Every bound, in the order the OpenAPI document lists them.
pub const TABLE: &[Limit] = &[
    Limit {
        name: "ROOM_NAME_BYTES_MAX",
        what: "room name (`name`, a token's `room`)",
        value: ROOM_NAME_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "DISPLAY_NAME_BYTES_MAX",
        what: "participant display name (`name` in a join, an admit or a token)",
        value: DISPLAY_NAME_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "METADATA_BYTES_MAX",
        what: "room or participant `metadata` (in an update, a join, an admit or a token)",
        value: METADATA_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "ID_BYTES_MAX",
        what: "participant identity and ids (`rm_…`, `pa_…`, …)",
        value: ID_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit { name: "JTI_BYTES_MAX", what: "token id (`jti`)", value: JTI_BYTES_MAX as u64, unit: "bytes" },
    Limit { name: "APP_KEY_BYTES_MAX", what: "app key", value: APP_KEY_BYTES_MAX as u64, unit: "bytes" },
    Limit { name: "APP_NAME_BYTES_MAX", what: "app name", value: APP_NAME_BYTES_MAX as u64, unit: "bytes" },
    Limit { name: "WEBHOOK_URLS_MAX", what: "webhook URLs per app", value: WEBHOOK_URLS_MAX as u64, unit: "URLs" },
    Limit { name: "WEBHOOK_URL_BYTES_MAX", what: "webhook URL", value: WEBHOOK_URL_BYTES_MAX as u64, unit: "bytes" },
    Limit {
        name: "REASON_BYTES_MAX",
        what: "a reason (disabling an app)",
        value: REASON_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "SECRET_GRACE_S_MAX",
        what: "grace of a rotated-out app secret (`grace_s`)",
        value: SECRET_GRACE_S_MAX as u64,
        unit: "seconds",
    },
    Limit {
        name: "PARTICIPANTS_PER_ROOM_MAX",
        what: "participants in one room",
        value: PARTICIPANTS_PER_ROOM_MAX as u64,
        unit: "participants",
    },
    Limit {
        name: "EMPTY_TIMEOUT_S_MAX",
        what: "a room's `empty_timeout_s`",
        value: EMPTY_TIMEOUT_S_MAX as u64,
        unit: "seconds",
    },
    Limit {
        name: "SDP_OFFER_BYTES_MAX",
        what: "SDP offer (WHIP/WHEP `POST`)",
        value: SDP_OFFER_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "SDP_FRAGMENT_BYTES_MAX",
        what: "trickle-ICE fragment (WHIP/WHEP `PATCH`)",
        value: SDP_FRAGMENT_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "REQUEST_BODY_BYTES_MAX",
        what: "JSON request body (413 `body_too_large` beyond)",
        value: REQUEST_BODY_BYTES_MAX as u64,
        unit: "bytes",
    },
    Limit {
        name: "TOKEN_BYTES_DEFAULT_MAX",
        what: "access token (the default of the token policy; 401 `token_too_large` beyond)",
        value: TOKEN_BYTES_DEFAULT_MAX as u64,
        unit: "bytes",
    },
];

/// The table as Markdown (for the OpenAPI description).
pub fn markdown() -> String {
    let mut out = String::from("| bound | value |\n|---|---|\n");
    for l in TABLE {
        out.push_str(&format!("| {} | {} {} |\n", l.what, l.value, l.unit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_listed_once() {
        let mut names: Vec<&str> = TABLE.iter().map(|l| l.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        assert!(markdown().contains("| participant display name"));
    }
}
