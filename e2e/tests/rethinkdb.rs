//! GuildNet's RethinkDB client (`guildnet-rethinkdb`) on the wire, against reqlite
//! (`e2e/reqlite`, a ReQL server in JavaScript) on loopback: the V1_0 handshake with
//! SCRAM-SHA-256, databases and tables made, listed and dropped, many queries at once on one
//! connection, rows paged by key, filtered and written one by one, and each kind of failure
//! in its class; and, when a `rethinkdb` binary is on PATH, users and grants on a real
//! RethinkDB server. No cluster is needed. Each test serves on an address of its own in
//! 127.0.0.0/8.

use std::net::IpAddr;
use std::time::Duration;

use guildnet_e2e::reqlite::Reqlite;
use guildnet_rethinkdb::{Connection, ErrorClass, Options, Reql, Term};
use serde_json::json;

fn options(addr: std::net::SocketAddr, password: &str) -> Options {
    Options {
        addr: addr.to_string(),
        user: "admin".into(),
        password: password.into(),
        connect_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn databases_and_tables_are_made_listed_and_dropped_through_one_connection() {
    let server = Reqlite::start(ip("127.0.28.1"), "s3cret", "lifecycle").await;
    let db = Connection::open(&options(server.addr(), "s3cret"))
        .await
        .expect("the handshake with the right password");
    db.run(Term::db_create("shop")).await.unwrap();
    let listed = db.run(Term::db_list()).await.unwrap();
    assert!(
        listed.as_array().unwrap().contains(&json!("shop")),
        "{listed}"
    );
    db.run(Term::table_create("shop", "items", "sku"))
        .await
        .unwrap();
    db.run(Term::table_create("shop", "orders", "id"))
        .await
        .unwrap();
    // Many queries at once share the connection, each answered on its own token.
    let lists = futures::future::join_all((0..20).map(|_| db.run(Term::table_list("shop")))).await;
    for list in lists {
        let mut tables: Vec<String> = serde_json::from_value(list.unwrap()).unwrap();
        tables.sort();
        assert_eq!(tables, ["items", "orders"]);
    }
    db.run(Term::table_drop("shop", "orders")).await.unwrap();
    let tables = db.run(Term::table_list("shop")).await.unwrap();
    assert_eq!(tables, json!(["items"]));
    db.run(Term::db_drop("shop")).await.unwrap();
    assert!(!db.is_broken());
}

#[tokio::test]
async fn each_failure_is_told_by_its_class() {
    let server = Reqlite::start(ip("127.0.28.2"), "right", "failures").await;

    let wrong = Connection::open(&options(server.addr(), "wrong")).await;
    let error = wrong.expect_err("a wrong password is refused");
    assert_eq!(error.class(), ErrorClass::AuthenticationFailed, "{error}");

    let db = Connection::open(&options(server.addr(), "right"))
        .await
        .unwrap();
    let missing = db
        .run(Term::table_create("nowhere", "items", "id"))
        .await
        .expect_err("a table in a database that does not exist");
    assert_eq!(missing.class(), ErrorClass::SchemaMissing, "{missing}");
    assert!(missing.to_string().contains("nowhere"), "{missing}");
    // A failed query leaves the connection usable.
    db.run(Term::db_list()).await.unwrap();

    // Nothing listens on this address: unreachable, within the connect timeout.
    let nobody = "127.0.28.3:28015".parse().unwrap();
    let error = Connection::open(&options(nobody, "right"))
        .await
        .expect_err("nothing listens there");
    assert_eq!(error.class(), ErrorClass::Unreachable, "{error}");

    // The server goes away: queries on the connection fail as unreachable.
    drop(server);
    let gone = tokio::time::timeout(Duration::from_secs(15), db.run(Term::db_list()))
        .await
        .expect("a query on a closed connection fails, it does not hang")
        .expect_err("the server is gone");
    assert_eq!(gone.class(), ErrorClass::Unreachable, "{gone}");
}

#[tokio::test]
async fn rows_are_paged_by_key_filtered_and_written_one_by_one() {
    let server = Reqlite::start(ip("127.0.28.4"), "pw", "rows").await;
    let db = Connection::open(&options(server.addr(), "pw"))
        .await
        .unwrap();
    db.run(Term::db_create("shop")).await.unwrap();
    db.run(Term::table_create("shop", "items", "sku"))
        .await
        .unwrap();
    let info = db.run(Term::table_info("shop", "items")).await.unwrap();
    assert_eq!(info["primary_key"], "sku", "{info}");

    let documents: Vec<_> = ["e", "b", "d", "a", "c"]
        .iter()
        .map(|sku| json!({"sku": sku, "colour": if *sku < "c" { "red" } else { "blue" }}))
        .collect();
    let inserted = db
        .run(Term::insert("shop", "items", &documents))
        .await
        .unwrap();
    assert_eq!(inserted["inserted"], 5, "{inserted}");
    // A key that is taken is refused, not overwritten.
    let again = db
        .run(Term::insert(
            "shop",
            "items",
            json!({"sku": "a", "colour": "green"}),
        ))
        .await
        .unwrap();
    assert_eq!(again["errors"], 1, "{again}");

    let skus = |page: serde_json::Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|d| d["sku"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = db
        .run(Term::page("shop", "items", "sku", None, None, 2))
        .await
        .unwrap();
    assert_eq!(skus(first), ["a", "b"]);
    let second = db
        .run(Term::page(
            "shop",
            "items",
            "sku",
            Some(&json!("b")),
            None,
            2,
        ))
        .await
        .unwrap();
    assert_eq!(skus(second), ["c", "d"]);
    let last = db
        .run(Term::page(
            "shop",
            "items",
            "sku",
            Some(&json!("d")),
            None,
            2,
        ))
        .await
        .unwrap();
    assert_eq!(skus(last), ["e"]);
    let red = json!({"colour": "red"});
    let filtered = db
        .run(Term::page(
            "shop",
            "items",
            "sku",
            None,
            red.as_object(),
            10,
        ))
        .await
        .unwrap();
    assert_eq!(skus(filtered), ["a", "b"]);

    let replaced = db
        .run(Term::replace(
            "shop",
            "items",
            "a",
            json!({"sku": "a", "n": 1}),
        ))
        .await
        .unwrap();
    assert_eq!(replaced["replaced"], 1, "{replaced}");
    let updated = db
        .run(Term::update("shop", "items", "a", json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(updated["replaced"], 1, "{updated}");
    let read = db.run(Term::get("shop", "items", "a")).await.unwrap();
    assert_eq!(read, json!({"sku": "a", "n": 2}));
    let deleted = db.run(Term::delete("shop", "items", "a")).await.unwrap();
    assert_eq!(deleted["deleted"], 1, "{deleted}");
    let gone = db.run(Term::get("shop", "items", "a")).await.unwrap();
    assert_eq!(gone, serde_json::Value::Null);
}

#[tokio::test]
async fn a_cursor_reads_a_table_batch_by_batch_and_follows_its_changes_until_dropped() {
    let server = Reqlite::start(ip("127.0.28.5"), "pw", "cursor").await;
    let db = std::sync::Arc::new(
        Connection::open(&options(server.addr(), "pw"))
            .await
            .unwrap(),
    );
    db.run(Term::db_create("shop")).await.unwrap();
    db.run(Term::table_create("shop", "items", "sku"))
        .await
        .unwrap();
    let rows: Vec<_> = (0..30)
        .map(|i| json!({"sku": format!("k{i:02}")}))
        .collect();
    db.run(Term::insert("shop", "items", &rows)).await.unwrap();
    let mut read = db
        .cursor(
            Term::by_key("shop", "items", "sku"),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let mut keys = Vec::new();
    while let Some(batch) = read.next_batch().await {
        keys.extend(batch.unwrap().into_iter().map(|row| row["sku"].clone()));
    }
    assert_eq!(keys.len(), 30);
    assert_eq!(keys.first(), Some(&json!("k00")));
    assert_eq!(keys.last(), Some(&json!("k29")));

    let mut feed = db
        .cursor(Term::changes("shop", "items"), None)
        .await
        .unwrap();
    // The server answers the start at once, with no change yet: the feed is open.
    let opened = tokio::time::timeout(Duration::from_secs(10), feed.next_batch())
        .await
        .expect("the server answers the feed's start")
        .expect("the feed goes on")
        .unwrap();
    assert_eq!(opened, Vec::<serde_json::Value>::new());
    db.run(Term::update("shop", "items", "k07", json!({"n": 1})))
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), feed.next_batch())
        .await
        .expect("the change arrives")
        .expect("the feed goes on")
        .unwrap()
        .remove(0);
    assert_eq!(change["old_val"], json!({"sku": "k07"}));
    assert_eq!(change["new_val"], json!({"sku": "k07", "n": 1}));
    // Dropped: the server is told to stop, and the connection goes on serving queries.
    drop(feed);
    db.run(Term::db_list()).await.unwrap();
    assert!(!db.is_broken());
}

/// A real RethinkDB server (the `rethinkdb` binary on PATH when the tests were built) on
/// loopback: a user made with the term the operator sends can log in with its password, and
/// its grants decide what it may do. reqlite has no users or grants, so without the binary
/// this test is reported as ignored.
#[tokio::test]
#[cfg_attr(
    not(rethinkdb_on_path),
    ignore = "no rethinkdb binary on PATH: users and grants need a real RethinkDB server"
)]
async fn a_user_made_and_granted_as_the_operator_does_logs_in_and_is_held_to_its_grants() {
    let dir = guildnet_e2e::cluster::repo_root().join("target/e2e-artifacts/rethinkdb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("rethinkdb.log")).unwrap();
    let bind = "127.0.28.10";
    let server = std::process::Command::new("rethinkdb")
        .args([
            "--bind",
            bind,
            "--driver-port",
            "28015",
            "--cluster-port",
            "29015",
        ])
        .args([
            "--no-http-admin",
            "--no-update-check",
            "--initial-password",
            "admin-pw",
        ])
        .arg("--directory")
        .arg(dir.join("data"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run rethinkdb");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let addr = format!("{bind}:28015").parse().unwrap();
    let admin = guildnet_e2e::eventually(
        "rethinkdb takes the admin password",
        Duration::from_secs(60),
        || async { Connection::open(&options(addr, "admin-pw")).await.ok() },
    )
    .await;
    admin.run(Term::db_create("shop")).await.unwrap();
    admin
        .run(Term::table_create("shop", "items", "id"))
        .await
        .unwrap();
    admin
        .run(Term::user_set_password("alice", "alice-pw"))
        .await
        .unwrap();
    admin
        .run(Term::grant("shop", "alice", true, false, false))
        .await
        .unwrap();

    let as_alice = |password: &str| Options {
        user: "alice".into(),
        ..options(addr, password)
    };
    let wrong = Connection::open(&as_alice("nope")).await;
    assert_eq!(
        wrong.expect_err("a wrong password").class(),
        ErrorClass::AuthenticationFailed
    );
    let alice = Connection::open(&as_alice("alice-pw")).await.unwrap();
    assert_eq!(
        alice.run(Term::get("shop", "items", 1)).await.unwrap(),
        json!(null)
    );
    let refused = alice
        .run(Term::insert("shop", "items", json!({"id": 1})))
        .await
        .expect_err("read-only: no writes");
    assert!(
        matches!(
            &refused,
            guildnet_rethinkdb::Error::Query {
                kind: guildnet_rethinkdb::QueryErrorKind::Permission,
                ..
            }
        ),
        "{refused}"
    );
    // Granting write (as a changed grant in the spec is applied) lets it write.
    admin
        .run(Term::grant("shop", "alice", true, true, false))
        .await
        .unwrap();
    alice
        .run(Term::insert("shop", "items", json!({"id": 1})))
        .await
        .unwrap();
    // A new password (a changed Secret) replaces the old one.
    admin
        .run(Term::user_set_password("alice", "alice-pw-2"))
        .await
        .unwrap();
    assert!(Connection::open(&as_alice("alice-pw")).await.is_err());
    Connection::open(&as_alice("alice-pw-2")).await.unwrap();
}
