//! JetStream key-value buckets beside the event stream (the load board,
//! the snapshots): opened, or made the way a KV bucket is made.

use std::time::Duration;

use async_nats::jetstream;

use crate::error::LogError;

/// How a bucket is made when it does not exist yet.
pub(crate) struct BucketSpec<'a> {
    pub name: &'a str,
    pub description: &'a str,
    /// Largest value, in bytes.
    pub value_bytes_max: usize,
    /// How long an entry lives (zero: for ever).
    pub max_age: Duration,
    pub replicas: usize,
}

/// Opens the bucket, or (when `make`) makes it: a stream `KV_<name>` on
/// `$KV.<name>.>`, history 1, file storage (a restarted server keeps it).
/// Made by hand because `create_key_value` first asks for the account's
/// info, in a form nats-server 2.9 does not answer. Without `make` (scoped
/// credentials) a missing bucket is [`LogError::Unavailable`]: the control
/// plane makes it.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    spec: &BucketSpec<'_>,
    make: bool,
) -> Result<jetstream::kv::Store, LogError> {
    let name = spec.name;
    match js.get_key_value(name).await {
        Ok(store) => return Ok(store),
        Err(e) if !make => {
            return Err(LogError::Unavailable(format!(
                "opening the bucket {name}: {e} (arc-control makes it when it starts)"
            )));
        }
        Err(_) => {}
    }
    let made = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some(spec.description.to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_bytes: -1,
            max_age: spec.max_age,
            max_message_size: i32::try_from(spec.value_bytes_max + 4096).unwrap_or(i32::MAX),
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: spec.replicas.max(1),
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    if let Err(e) = made {
        // Several instances starting at once on an empty server all find
        // the bucket missing; the server refuses all but one, in 2.9 as
        // "subjects overlap with an existing stream" (10065), seen in a CI
        // run. A bucket that opens now was made by one of the others.
        if let Ok(store) = js.get_key_value(name).await {
            return Ok(store);
        }
        let message = format!("creating the bucket {name}: {e}");
        return Err(if crate::jetstream::create_transient(&e) {
            LogError::Unavailable(message)
        } else {
            LogError::Backend(message)
        });
    }
    js.get_key_value(name).await.map_err(|e| LogError::Unavailable(format!("opening the bucket {name}: {e}")))
}

/// Fails at once while the connection is down (as the log does).
pub(crate) fn ensure_connected(client: &async_nats::Client) -> Result<(), LogError> {
    match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        state => Err(LogError::Unavailable(format!("not connected to NATS ({state})"))),
    }
}
