//! GuildNet's RethinkDB client (`guildnet-rethinkdb`) on the wire, against reqlite
//! (`e2e/reqlite`, a ReQL server in JavaScript) on loopback: the V1_0 handshake with
//! SCRAM-SHA-256, databases and tables made, listed and dropped, many queries at once on one
//! connection, and each kind of failure in its class. No cluster is needed. Each test serves
//! on an address of its own in 127.0.0.0/8.

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
