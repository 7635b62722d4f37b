//! The database API through the proxy, on a control plane of its own: the operator (as its
//! ServiceAccount) runs a GuildDatabase whose server is reqlite (`e2e/reqlite`, a ReQL
//! server in JavaScript) at the pod IP, and the proxy (the release build, `--auth header`
//! on loopback) serves it. Against the same server in the same run, as the baseline:
//! listing 1,000 rows (one page, `limit=1000`) through the proxy and straight from the
//! server with GuildNet's client; and a change's delivery, from the write to its event on
//! a changefeed over SSE through the proxy and on a changefeed read straight from the
//! server. Reports p50 and p99 of each, the proxy's ratio to the baseline, and the
//! machine's load. Needs root (the pods' network namespace). Run by `make bench`; prints a
//! Markdown section.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guildnet_api::GuildDatabase;
use guildnet_api::common::find_condition;
use guildnet_api::database::facts::ConditionType;
use guildnet_api::policy::owner::owner_id;
use guildnet_e2e::cluster::{Cluster, Operator, Proxy};
use guildnet_e2e::reqlite::Reqlite;
use guildnet_e2e::upstream::{EventStream, send};
use guildnet_e2e::{User, create_namespace, eventually};
use guildnet_rethinkdb::{Connection, Options, Reql, Term};
use hyper::Request;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const ROWS: usize = 1000;
const LISTINGS: usize = 50;
const CHANGES: usize = 200;
const NAMESPACE: &str = "bench-db";
const TIMEOUT: Duration = Duration::from_secs(120);

fn request(proxy: std::net::SocketAddr, path: &str) -> Request<String> {
    Request::get(path)
        .header("host", proxy.to_string())
        .header("accept", "application/json, text/event-stream")
        .header("x-auth-request-user", "alice")
        .body(String::new())
        .unwrap()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `p50 p99` of `proxy` and `direct`, and the ratios, as table cells.
fn row(what: &str, proxy: &mut [Duration], direct: &mut [Duration]) -> String {
    let (p50, d50) = (percentile(proxy, 0.5), percentile(direct, 0.5));
    let (p99, d99) = (percentile(proxy, 0.99), percentile(direct, 0.99));
    format!(
        "| {what} | {} / {} | {} / {} | {:.2}× / {:.2}× |",
        ms(p50),
        ms(p99),
        ms(d50),
        ms(d99),
        p50.as_secs_f64() / d50.as_secs_f64(),
        p99.as_secs_f64() / d99.as_secs_f64(),
    )
}

#[tokio::main]
async fn main() {
    let hub = Cluster::start("bench-db");
    let admin = hub.client(User::Admin).await;
    let _operator = Operator::start_as_service_account(&hub, "op", &["--leader-elect=false"]);
    let proxy = Proxy::start(
        &hub,
        &["--auth", "header", "--trusted-proxy", "127.0.0.1/32"],
    )
    .await;
    create_namespace(&admin, NAMESPACE, &[]).await;
    let databases: Api<GuildDatabase> = Api::namespaced(admin.clone(), NAMESPACE);
    let db: GuildDatabase = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
        "metadata": {"name": "bench", "labels": {"guildnet.io/owner": owner_id("alice")}},
        "spec": {
            "storage": {"size": "1Gi"},
            "databases": [{"name": "shop", "tables": [{"name": "items", "primaryKey": "sku"}]}],
        },
    }))
    .unwrap();
    databases.create(&PostParams::default(), &db).await.unwrap();
    eventually("one ready server", TIMEOUT, || async {
        let db = databases.get("bench").await.ok()?;
        (db.status?.ready_replicas == Some(1)).then_some(())
    })
    .await;
    let (server, password) = Reqlite::serve_database(&admin, NAMESPACE, "bench").await;
    eventually("the schema applied", TIMEOUT, || async {
        let status = databases.get("bench").await.ok()?.status?;
        find_condition(&status.conditions, ConditionType::SchemaApplied)
            .filter(|c| c.reason == "AsDeclared")
            .map(drop)
    })
    .await;
    let direct = Arc::new(
        Connection::open(&Options {
            addr: server.addr().to_string(),
            user: "admin".into(),
            password,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
        })
        .await
        .unwrap(),
    );
    let rows: Vec<Value> = (0..ROWS)
        .map(|i| json!({"sku": format!("k{i:04}"), "name": format!("item {i}"), "n": i}))
        .collect();
    direct
        .run(Term::insert("shop", "items", &rows))
        .await
        .unwrap();
    let listing =
        format!("/api/databases/{NAMESPACE}/bench/dbs/shop/tables/items/rows?limit={ROWS}");
    // The proxy's admin password and connection in place before anything is timed.
    eventually("the proxy to serve the rows", TIMEOUT, || async {
        let response = send(proxy.listen(), request(proxy.listen(), &listing))
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    let (mut through_proxy, mut straight) = (Vec::new(), Vec::new());
    for i in 0..LISTINGS {
        // Alternating which goes first, so neither always meets a warmer server.
        for proxy_first in [i % 2 == 0, i % 2 != 0] {
            let started = Instant::now();
            if proxy_first {
                let response = send(proxy.listen(), request(proxy.listen(), &listing))
                    .await
                    .unwrap();
                let page: Value = serde_json::from_slice(response.body()).unwrap();
                assert_eq!(page["items"].as_array().map(Vec::len), Some(ROWS));
                through_proxy.push(started.elapsed());
            } else {
                let page = direct
                    .run(Term::page("shop", "items", "sku", None, None, ROWS as u32))
                    .await
                    .unwrap();
                assert_eq!(page.as_array().map(Vec::len), Some(ROWS));
                straight.push(started.elapsed());
            }
        }
    }

    // Both feeds open, each read by a task of its own that notes when each change arrives.
    let feed_path = format!("/sse/databases/{NAMESPACE}/bench/shop/items/changes");
    let mut feed = EventStream::open(proxy.listen(), request(proxy.listen(), &feed_path))
        .await
        .expect("the changefeed opens");
    let mut cursor = direct
        .cursor(Term::changes("shop", "items"), None)
        .await
        .unwrap();
    let opened = cursor.next_batch().await.unwrap().unwrap();
    assert!(opened.is_empty());
    let (proxy_tx, mut proxy_rx) = tokio::sync::mpsc::unbounded_channel();
    let proxy_reader = tokio::spawn(async move {
        loop {
            let change = feed.next_event("change", TIMEOUT).await;
            let _ = proxy_tx.send((change["new_val"]["n"].clone(), Instant::now()));
        }
    });
    let (direct_tx, mut direct_rx) = tokio::sync::mpsc::unbounded_channel();
    let direct_reader = tokio::spawn(async move {
        while let Some(Ok(batch)) = cursor.next_batch().await {
            let now = Instant::now();
            for change in batch {
                let _ = direct_tx.send((change["new_val"]["n"].clone(), now));
            }
        }
    });
    // The proxy's feed is open once a change arrives on it: one untimed change first.
    let writer = direct.clone();
    writer
        .run(Term::update("shop", "items", "k0000", json!({"n": -1})))
        .await
        .unwrap();
    let _ = tokio::time::timeout(TIMEOUT, proxy_rx.recv())
        .await
        .expect("the feed delivers");
    let _ = tokio::time::timeout(TIMEOUT, direct_rx.recv())
        .await
        .expect("the cursor delivers");
    let (mut feed_proxy, mut feed_direct) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let value = json!(ROWS + i);
        let started = Instant::now();
        writer
            .run(Term::update(
                "shop",
                "items",
                format!("k{:04}", i % ROWS),
                json!({"n": value}),
            ))
            .await
            .unwrap();
        for (rx, samples) in [
            (&mut proxy_rx, &mut feed_proxy),
            (&mut direct_rx, &mut feed_direct),
        ] {
            let (got, at) = tokio::time::timeout(TIMEOUT, rx.recv())
                .await
                .expect("the change arrives")
                .expect("the feed goes on");
            assert_eq!(got, value, "changes arrive in order, once");
            samples.push(at - started);
        }
    }

    // Before the proxy and the server stop under them.
    proxy_reader.abort();
    direct_reader.abort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("### Database API (`make bench`: e2e/benches/database.rs)");
    println!();
    println!(
        "Run on {}: reqlite (a ReQL server in JavaScript, the peer the tests use; no RethinkDB \
         server is installable here) at a GuildDatabase's pod IP, the proxy's release build \
         with `--auth header`, load average {} during the run. Through the proxy against \
         GuildNet's own client straight to the same server, in the same run.",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
        load.join(" "),
    );
    println!();
    println!(
        "| | through the proxy p50 / p99 | straight to the server p50 / p99 | ratio p50 / p99 |"
    );
    println!("|---|---|---|---|");
    println!(
        "{}",
        row(
            &format!("listing {ROWS} rows (one page), {LISTINGS} times"),
            &mut through_proxy,
            &mut straight
        )
    );
    println!(
        "{}",
        row(
            &format!("a change, write to event, {CHANGES} changes"),
            &mut feed_proxy,
            &mut feed_direct
        )
    );
    println!();
}
