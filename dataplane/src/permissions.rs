//! What a media node's NATS credentials allow: the least a node needs, and
//! nothing of the rest of the cluster.
//!
//! A node appends to the log only on its own node aggregate's subject: its
//! registration and liveness, and its reports of the media it carries
//! (tracks published and unpublished, subscriptions, sessions ended) — never
//! a room, track, app, webhook, participant or another node. The control
//! plane's report reactor checks each report against the room (the session
//! it names must be placed on that node; an end may also name a session
//! that already left) and records the room's or track's event itself, so a
//! node can neither touch rooms it does not carry nor forge another node's
//! reports. It reads the stream and the snapshot bucket (direct gets,
//! ephemeral consumers), writes its own key of the load board, answers
//! requests on its own subject only (replies go to the requester's reply
//! subject: `allow_responses`), publishes its own room signals, and receives
//! replies under its own inbox prefix. It cannot create, update, purge or
//! delete a stream, bucket or consumer of another.
//!
//! [`node`] is the one definition; `ansible/roles/nats/vars/main.yml` is
//! generated from it (a test checks the two agree) and the test harness
//! renders NATS configurations with [`NatsPermissions::to_conf`].

/// The subjects one NATS user may publish to and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsPermissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer the requests it receives (publish once to their reply subject).
    pub allow_responses: bool,
}

/// The inbox prefix a node's connection uses (its replies arrive under it).
pub fn inbox_prefix(node: &str) -> String {
    format!("_INBOX_{node}")
}

/// The permissions of media node `node` on the log `stream` (subjects
/// `<prefix>.<kind>.<id>`). Arguments are plain strings so the Ansible
/// variables can be generated with placeholders.
pub fn node(stream: &str, prefix: &str, node: &str) -> NatsPermissions {
    let api = "$JS.API";
    let publish = vec![
        // Appends: its own aggregate only (registration, liveness, reports).
        format!("{prefix}.node.{node}"),
        // The stream and the buckets, as they are (never created or changed).
        format!("{api}.STREAM.INFO.{stream}"),
        format!("{api}.STREAM.INFO.KV_{stream}_LOAD"),
        format!("{api}.STREAM.INFO.KV_{stream}_SNAP"),
        // Reads: direct gets by sequence and by subject, snapshots.
        format!("{api}.DIRECT.GET.{stream}"),
        format!("{api}.DIRECT.GET.{stream}.>"),
        format!("{api}.DIRECT.GET.KV_{stream}_SNAP.>"),
        format!("{api}.STREAM.MSG.GET.KV_{stream}_SNAP"),
        // Its follower: ephemeral pull consumers on the stream.
        format!("{api}.CONSUMER.CREATE.{stream}"),
        format!("{api}.CONSUMER.CREATE.{stream}.>"),
        format!("{api}.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("{api}.CONSUMER.INFO.{stream}.*"),
        format!("{api}.CONSUMER.DELETE.{stream}.*"),
        // Its own load sample.
        format!("$KV.{stream}_LOAD.{node}"),
        // Its rooms' signals (active speakers, quality).
        format!("arc.media.{node}.signals"),
    ];
    let subscribe = vec![format!("arc.media.{node}.rpc"), format!("{}.>", inbox_prefix(node))];
    NatsPermissions { publish, subscribe, allow_responses: true }
}

impl NatsPermissions {
    /// This user as an entry of a nats-server configuration's `users` list.
    /// `user` and `password` must not contain `"` or `\`.
    pub fn to_conf(&self, user: &str, password: &str) -> String {
        let list = |subjects: &[String]| subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "{{ user: \"{user}\", password: \"{password}\", permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }}{} }} }}",
            list(&self.publish),
            list(&self.subscribe),
            if self.allow_responses { ", allow_responses: true" } else { "" },
        )
    }

    /// The Ansible variables the `nats` role renders node users from
    /// (`{stream}`, `{prefix}` and `{node}` stand for the values).
    pub fn ansible_vars() -> String {
        let p = node("{stream}", "{prefix}", "{node}");
        let mut out = String::from(
            "---\n# Generated from dataplane/src/permissions.rs (`ARC_UPDATE_SCHEMAS=1 cargo test -p arc-media --lib\n\
             # permissions`); do not edit. What a media node's NATS user may do; the\n\
             # template replaces {stream}, {prefix} and {node}.\n",
        );
        out.push_str("nats_node_publish:\n");
        for s in &p.publish {
            out.push_str(&format!("  - \"{s}\"\n"));
        }
        out.push_str("nats_node_subscribe:\n");
        for s in &p.subscribe {
            out.push_str(&format!("  - \"{s}\"\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_may_append_only_to_its_own_node_aggregate() {
        let p = node("S", "arc.evt", "n1");
        let appends: Vec<&String> = p.publish.iter().filter(|s| s.starts_with("arc.evt.")).collect();
        assert_eq!(appends, ["arc.evt.node.n1"]);
        for forbidden in
            ["STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE", ".app.", ".room.", ".track.", "webhook"]
        {
            assert!(!p.publish.iter().any(|s| s.contains(forbidden)), "{forbidden} allowed: {p:?}");
        }
        assert_eq!(p.subscribe, ["arc.media.n1.rpc", "_INBOX_n1.>"]);
        // Its subjects are the node protocol's.
        let id = arc_events::NodeId::parse("n1").expect("node id");
        assert!(p.subscribe.contains(&arc_nodeproto::subject(&id)));
        assert!(p.publish.contains(&arc_nodeproto::signals_subject(&id)));
    }

    #[test]
    fn the_ansible_variables_are_generated_from_these_permissions() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ansible/roles/nats/vars/main.yml");
        let want = NatsPermissions::ansible_vars();
        if std::env::var_os("ARC_UPDATE_SCHEMAS").is_some() {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &want).expect("write the Ansible variables");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{} is stale: run ARC_UPDATE_SCHEMAS=1 cargo test -p arc-media --lib permissions",
            path.display()
        );
    }
}
