//! The PostgreSQL store's own behaviour, beyond the conformance suite: the URL's password never
//! shown, clear errors for a bad URL, a refused login or a server that is not there, and the
//! versioned schema (made once by workers starting together, refused when a newer build has
//! migrated it).
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::postgres::{self, builder, password, psql, unique_schema, url_with_password};
use common::{QUICK, bounded};
use runtime_thread::engine::{PersistError, Persister, PostgresPersister};

fn assert_hidden(text: &str) {
    assert!(
        !text.contains(&password()),
        "the password is shown in: {text}"
    );
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn the_password_is_never_shown_and_failures_say_what_to_do() {
    bounded(QUICK, || {
        let store = builder(&unique_schema()).connect().unwrap();
        let shown = format!("{store:?} {}", store.shown_url());
        assert_hidden(&shown);
        assert!(shown.contains("runtime_thread@127.0.0.1:"), "{shown}");
        assert_hidden(&format!("{:?}", builder("x")));

        // A wrong password: refused for good, not "unreachable".
        let refused = PostgresPersister::builder(url_with_password("wrong-password"))
            .connect()
            .unwrap_err();
        assert!(!refused.is_transient(), "{refused:?}");
        let text = format!("{refused} {refused:?}");
        assert_hidden(&text);
        assert!(text.contains("refused the connection"), "{text}");

        // Nothing listening: unreachable for now.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("postgres://someone:{}@127.0.0.1:{port}/db", password());
        let unreachable = PostgresPersister::builder(url)
            .timeout(Duration::from_secs(2))
            .connect()
            .unwrap_err();
        assert!(unreachable.is_transient(), "{unreachable:?}");
        assert_hidden(&format!("{unreachable} {unreachable:?}"));
        assert!(
            unreachable.to_string().contains("cannot be reached"),
            "{unreachable}"
        );

        // Not a URL at all (with a password in it).
        let garbled = format!("postgres://user:{}@host:notaport/db", password());
        let error = PostgresPersister::connect(garbled).unwrap_err().to_string();
        assert_hidden(&error);
        assert!(error.contains("is not a PostgreSQL URL"), "{error}");

        let error = builder("Bad-Name").connect().unwrap_err().to_string();
        assert!(error.contains("lower-case letters"), "{error}");
    });
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn workers_starting_together_make_the_schema_once_and_a_newer_one_is_refused() {
    bounded(QUICK, || {
        let schema = unique_schema();
        let stores: Vec<PostgresPersister> = std::thread::scope(|scope| {
            let starting: Vec<_> = (0..6)
                .map(|_| scope.spawn(|| postgres::store(&schema, false)))
                .collect();
            starting.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert_eq!(
            psql(&format!("SELECT version FROM {schema}.schema_version")),
            "2",
            "one row, at this build's version"
        );
        let pid = uuid::Uuid::new_v4();
        stores[0].save_bytes(pid, b"{}".to_vec()).unwrap();
        stores[0].flush().unwrap();
        assert_eq!(stores[5].list().unwrap(), vec![pid], "one table for all");
        drop(stores);

        // As if a newer build had migrated it: refused, and left as it was.
        psql(&format!("UPDATE {schema}.schema_version SET version = 99"));
        let error = builder(&schema).connect().unwrap_err();
        assert!(matches!(error, PersistError::Store { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("version 99, newer than this build knows (2)")
                && text.contains("newer build"),
            "{text}"
        );
        assert_eq!(
            psql(&format!("SELECT version FROM {schema}.schema_version")),
            "99"
        );
        assert_eq!(
            psql(&format!("SELECT count(*) FROM {schema}.checkpoints")),
            "1"
        );
    });
}

/// A database made by the first build (version 1: checkpoints only, no leases) is migrated to
/// this build's version on first use, and keeps its checkpoints.
#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn a_database_of_an_older_build_is_migrated_and_keeps_its_checkpoints() {
    bounded(QUICK, || {
        let schema = unique_schema();
        let pid = uuid::Uuid::new_v4();
        // What version 1 made, as it made it.
        psql(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.schema_version (version integer NOT NULL);
             INSERT INTO {schema}.schema_version VALUES (1);
             CREATE TABLE {schema}.checkpoints (pid uuid PRIMARY KEY, body bytea NOT NULL);
             INSERT INTO {schema}.checkpoints VALUES ('{pid}', 'not a checkpoint');"
        ));
        let store = postgres::store(&schema, false);
        assert_eq!(
            psql(&format!("SELECT version FROM {schema}.schema_version")),
            "2"
        );
        assert_eq!(store.list().unwrap(), vec![pid]);
        assert!(matches!(store.load(pid), Err(PersistError::Corrupt { .. })));
        // The leases work on the migrated tables.
        store.acquire(pid).unwrap();
        assert_eq!(psql(&format!("SELECT count(*) FROM {schema}.leases")), "1");
    });
}

/// Refused before any connection is tried: a lease renewed every third of nothing would renew
/// in a loop.
#[test]
fn a_lease_too_short_to_renew_is_refused() {
    let refused = PostgresPersister::builder("postgres://nobody@127.0.0.1:1/none")
        .lease_for(Duration::from_millis(10))
        .connect()
        .unwrap_err();
    assert!(refused.to_string().contains("too short"), "{refused}");
}
