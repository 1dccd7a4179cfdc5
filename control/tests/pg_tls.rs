//! TLS to PostgreSQL: the test services' PostgreSQL offers TLS with a
//! certificate from a throwaway CA (`scripts/services`); arc-control given
//! `?sslmode=verify-full&sslrootcert=<that CA>` in its database URL runs on
//! an encrypted, verified connection, and the same URL with another CA stops
//! its start with the reason.

mod common;

use std::process::Command;

use common::{ADMIN_KEY, Mode, create_app, create_pg_database, start};
use sqlx::{Connection, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_control_reads_and_writes_its_read_models_over_verified_tls() {
    let Ok(ca) = std::env::var("ARC_TEST_PG_CA_FILE") else {
        panic!("ARC_TEST_PG_CA_FILE not set: run scripts/test (scripts/services start)");
    };
    let admin = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    let plain = create_pg_database(&admin).await;
    let url = format!("{plain}?sslmode=verify-full&sslrootcert={ca}");

    // The connection a client gets with that URL is TLS.
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("a verified TLS connection");
    let ssl: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the connection is encrypted");
    drop(conn);

    // arc-control on it: migrations, projections, an app made and read back.
    let (nats, stream, prefix, dir, _) = common::cluster("PGT", "pgt").await;
    let mode = Mode::Cluster {
        nats: nats.clone(),
        stream: stream.clone(),
        prefix: prefix.clone(),
        database: url.clone(),
        data_dir: dir.path().to_path_buf(),
    };
    let server = start(&mode);
    let app = create_app(&server.base, ADMIN_KEY, "over-tls").await;
    let apps = common::admin_get(&server.base, "/v1/apps").await;
    assert!(apps.to_string().contains(&app.0), "the app was read back from the read models: {apps}");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let encrypted: i64 = sqlx::query(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.datname = current_database() AND s.ssl AND s.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count")
    .get(0);
    assert!(encrypted > 0, "arc-control's own connections are encrypted");
    drop(server);

    // Another CA: the server's certificate is not trusted, the start stops.
    let other = dir.path().join("other-ca.pem");
    let made = rcgen::generate_simple_self_signed(vec!["elsewhere".to_owned()]).expect("cert");
    std::fs::write(&other, made.cert.pem()).expect("write");
    let wrong = format!("{plain}?sslmode=verify-full&sslrootcert={}", other.display());
    let out = Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg("serve")
        .args(mode.args(Some(&wrong)))
        .output()
        .expect("run arc-control");
    assert!(!out.status.success(), "an untrusted database certificate stops the start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"), "{err}");
}
