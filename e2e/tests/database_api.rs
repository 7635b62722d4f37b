//! The database API of the proxy on a real API server: the operator (as its ServiceAccount)
//! runs a GuildDatabase and hands its admin password to the proxy in GuildNet's own Secret;
//! the proxy (as its ServiceAccount, `--auth header` behind a trusted front proxy on
//! loopback) serves the owner the databases, tables and rows of its servers — reqlite
//! (`e2e/reqlite`) at the server's pod IP, in the pods' network namespace — pages them by
//! key, filters them, writes them one by one, keeps an audit log of every write, refuses
//! another user until RBAC grants `guilddatabases/data`, exports and imports tables
//! (NDJSON, CSV), streams a table's changes over SSE, and refuses bad requests naming what
//! is wrong. The password is taken back once the database is deleted.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use guildnet_api::GuildDatabase;
use guildnet_api::database::facts::ConditionType;
use guildnet_api::policy::owner::owner_id;
use guildnet_e2e::cluster::{Cluster, Operator, Proxy};
use guildnet_e2e::reqlite::Reqlite;
use guildnet_e2e::upstream::{EventStream, send};
use guildnet_e2e::workspaces::wait_for;
use guildnet_e2e::{User, create_namespace, eventually};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
/// A schema check (every 30 s) after the longest connection backoff (60 s).
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "team-dbapi";
const CREDENTIALS: &str = "guildnet-database-credentials";

/// A caller of the proxy, as the trusted front proxy names them.
struct Caller {
    proxy: SocketAddr,
    user: &'static str,
}

impl Caller {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let response = self.raw(method, path, body).await;
        let status = response.status();
        let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (status, json)
    }

    async fn raw(&self, method: &str, path: &str, body: String) -> Response<Bytes> {
        let origin = format!("http://{}", self.proxy);
        let request = Request::builder()
            .method(method)
            .uri(format!("/api/databases/{NAMESPACE}/inventory{path}"))
            .header("host", self.proxy.to_string())
            .header("origin", origin)
            .header("content-type", "application/json")
            .header("x-auth-request-user", self.user)
            .header("x-auth-request-groups", "guildnet:users")
            .body(body)
            .unwrap();
        send(self.proxy, request).await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    fn sse_request(&self, path: &str) -> Request<String> {
        Request::get(format!("/sse/databases/{NAMESPACE}/inventory{path}"))
            .header("host", self.proxy.to_string())
            .header("accept", "text/event-stream")
            .header("x-auth-request-user", self.user)
            .body(String::new())
            .unwrap()
    }

    /// A refused feed's answer.
    async fn get_sse(&self, path: &str) -> (StatusCode, Value) {
        let response = send(self.proxy, self.sse_request(path)).await.unwrap();
        let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status(), json)
    }

    /// An open changefeed, or None when it is refused.
    async fn try_feed(&self, path: &str) -> Option<EventStream> {
        EventStream::open(self.proxy, self.sse_request(path)).await
    }

    async fn feed(&self, path: &str) -> EventStream {
        self.try_feed(path).await.expect("the changefeed opens")
    }
}

fn skus(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["sku"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_owner_reads_and_writes_rows_through_the_proxy_and_every_write_is_audited() {
    let hub = Cluster::start("dbapi");
    let admin = hub.client(User::Admin).await;
    let _operator = Operator::start_as_service_account(&hub, "op", &["--leader-elect=false"]);
    let proxy = Proxy::start(
        &hub,
        &[
            "--auth",
            "header",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--max-database-feeds-per-user",
            "1",
        ],
    )
    .await;
    create_namespace(
        &admin,
        NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    // Bob may read the data of the namespace's databases, not write it.
    let roles: Api<Role> = Api::namespaced(admin.clone(), NAMESPACE);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "data-reader"},
        "rules": [{"apiGroups": ["guildnet.io"], "resources": ["guilddatabases/data"], "verbs": ["get"]}],
    }))
    .unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), NAMESPACE);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bob-reads-data"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "data-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // Alice's database (the owner label as the webhook stamps it; no webhook runs here).
    let databases: Api<GuildDatabase> = Api::namespaced(admin.clone(), NAMESPACE);
    let db: GuildDatabase = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
        "metadata": {"name": "inventory", "labels": {"guildnet.io/owner": owner_id("alice")}},
        "spec": {
            "storage": {"size": "1Gi"},
            "databases": [{"name": "shop", "tables": [{"name": "items", "primaryKey": "sku"}]}],
        },
    }))
    .unwrap();
    databases.create(&PostParams::default(), &db).await.unwrap();
    wait_for(&databases, "inventory", "Running with 1 ready", |db| {
        db.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;

    // The operator hands the admin password over under <namespace>.<name>.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let password = secrets.get("inventory-admin").await.unwrap().data.unwrap()["password"]
        .0
        .clone();
    let system: Api<Secret> = Api::namespaced(admin.clone(), "guildnet-system");
    let key = format!("{NAMESPACE}.inventory");
    eventually(
        "the admin password handed to the proxy",
        TIMEOUT,
        || async {
            let handed = system.get_opt(CREDENTIALS).await.ok()??;
            (handed.data?.get(&key)?.0 == password).then_some(())
        },
    )
    .await;

    let (_server, _) = Reqlite::serve_database(&admin, NAMESPACE, "inventory").await;
    wait_for(&databases, "inventory", "SchemaApplied AsDeclared", |db| {
        guildnet_api::common::find_condition(
            &db.status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
            ConditionType::SchemaApplied,
        )
        .is_some_and(|c| c.reason == "AsDeclared")
    })
    .await;

    let alice = Caller {
        proxy: proxy.listen(),
        user: "alice",
    };
    let bob = Caller {
        proxy: proxy.listen(),
        user: "bob",
    };
    let carol = Caller {
        proxy: proxy.listen(),
        user: "carol",
    };

    // The declared database, GuildNet's and RethinkDB's own not listed.
    let (status, listed) = alice.get("/dbs").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["items"], json!(["shop"]));
    let (status, created) = alice
        .call("POST", "/dbs/shop/tables", Some(json!({"name": "orders"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, tables) = alice.get("/dbs/shop/tables").await;
    assert_eq!(tables["items"], json!(["items", "orders"]));

    // Rows: inserted, a taken key refused, paged by key, filtered.
    let rows: Vec<Value> = ["e", "b", "d", "a", "c"]
        .iter()
        .map(|sku| json!({"sku": sku, "colour": if *sku < "c" { "red" } else { "blue" }}))
        .collect();
    let (status, inserted) = alice
        .call("POST", "/dbs/shop/tables/items/rows", Some(json!(rows)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inserted}");
    assert_eq!(inserted["inserted"], 5);
    let (status, taken) = alice
        .call(
            "POST",
            "/dbs/shop/tables/items/rows",
            Some(json!({"sku": "a"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    assert_eq!(taken["error"]["reason"], "RowRefused");

    let (status, first) = alice.get("/dbs/shop/tables/items/rows?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["primaryKey"], "sku");
    assert_eq!(skus(&first), ["a", "b"]);
    let mut after = first["next"].as_str().unwrap().to_owned();
    let mut seen = skus(&first)
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    loop {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("limit", "2")
            .append_pair("after", &after)
            .finish();
        let (status, page) = alice
            .get(&format!("/dbs/shop/tables/items/rows?{query}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(skus(&page).iter().map(|s| s.to_string()));
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let (_, red) = alice
        .get("/dbs/shop/tables/items/rows?filter=colour%3Dred")
        .await;
    assert_eq!(skus(&red), ["a", "b"]);

    // One row: read, replaced, updated, deleted; a missing one is 404 naming it.
    let (status, row) = alice.get("/dbs/shop/tables/items/rows/a").await;
    assert_eq!(
        (status, row["colour"].clone()),
        (StatusCode::OK, json!("red"))
    );
    let (status, _) = alice
        .call(
            "PUT",
            "/dbs/shop/tables/items/rows/a",
            Some(json!({"n": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = alice
        .call(
            "PATCH",
            "/dbs/shop/tables/items/rows/a",
            Some(json!({"n": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, row) = alice.get("/dbs/shop/tables/items/rows/a").await;
    assert_eq!(row, json!({"sku": "a", "n": 2}));
    let (status, missing) = alice
        .call(
            "PATCH",
            "/dbs/shop/tables/items/rows/zz",
            Some(json!({"n": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert!(missing["error"]["message"].as_str().unwrap().contains("zz"));
    let (status, _) = alice
        .call("DELETE", "/dbs/shop/tables/items/rows/a", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = alice.get("/dbs/shop/tables/items/rows/a").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // What the spec declares is not dropped here; what is not, is.
    let (status, declared) = alice.call("DELETE", "/dbs/shop/tables/items", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{declared}");
    assert_eq!(declared["error"]["reason"], "Declared");
    let (status, _) = alice.call("DELETE", "/dbs/shop/tables/orders", None).await;
    assert_eq!(status, StatusCode::OK);

    // Bad requests name what is wrong.
    let (status, nowhere) = alice.get("/dbs/nowhere/tables").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{nowhere}");
    assert!(
        nowhere["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    let (status, gone) = alice.get("/dbs/shop/tables/ghost/rows").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    assert!(gone["error"]["message"].as_str().unwrap().contains("ghost"));
    let too_big = format!(
        "{{\"sku\": \"big\", \"blob\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    let response = alice
        .raw("POST", "/dbs/shop/tables/items/rows", too_big)
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Every write is in the audit log, newest first, with who made it.
    let (status, audit) = alice.get("/audit?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "table.drop",
            "row.delete",
            // zz: not found, recorded with its error like every write the server saw.
            "row.update",
            "row.update",
            "row.replace",
            "rows.insert",
            "rows.insert",
            "table.create",
        ]
    );
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user"] == "alice")
    );
    // Refused writes are recorded with their error.
    assert_eq!(audit["items"][2]["outcome"]["error"]["reason"], "NotFound");
    assert_eq!(
        audit["items"][5]["outcome"]["error"]["reason"],
        "RowRefused"
    );
    assert!(
        proxy
            .log_lines()
            .iter()
            .any(|l| l["fields"]["message"] == "database write"
                && l["fields"]["action"] == "row.delete"),
        "a log line per write"
    );

    // Export: every row, NDJSON as stored, CSV with a header.
    let response = alice
        .raw("GET", "/dbs/shop/tables/items/export", String::new())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let exported = String::from_utf8(response.body().to_vec()).unwrap();
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{exported}");
    assert_eq!(lines[0]["sku"], "b");
    let csv = alice
        .raw(
            "GET",
            "/dbs/shop/tables/items/export?format=csv",
            String::new(),
        )
        .await;
    let csv = String::from_utf8(csv.body().to_vec()).unwrap();
    assert_eq!(csv.lines().next(), Some("sku,colour"), "{csv}");
    assert_eq!(csv.lines().count(), 5, "{csv}");

    // Import: into a new table, then again with conflicts refused, then merged.
    alice
        .call(
            "POST",
            "/dbs/shop/tables",
            Some(json!({"name": "copy", "primaryKey": "sku"})),
        )
        .await;
    let response = alice
        .raw("POST", "/dbs/shop/tables/copy/import", exported.clone())
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let report: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        (report["rows"].clone(), report["inserted"].clone()),
        (json!(4), json!(4))
    );
    let again = alice
        .raw("POST", "/dbs/shop/tables/copy/import", exported.clone())
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let report: Value = serde_json::from_slice(again.body()).unwrap();
    assert_eq!(report["errors"], 4, "{report}");
    let merged = alice
        .raw(
            "POST",
            "/dbs/shop/tables/copy/import?format=csv&conflict=update",
            "sku,n\nb,7\n".to_owned(),
        )
        .await;
    assert_eq!(merged.status(), StatusCode::CREATED);
    let (_, b) = alice.get("/dbs/shop/tables/copy/rows/b").await;
    assert_eq!(b, json!({"sku": "b", "colour": "red", "n": 7}));
    let broken = alice
        .raw(
            "POST",
            "/dbs/shop/tables/copy/import",
            "{\"sku\": \"z\"}\nnot json\n".to_owned(),
        )
        .await;
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(broken.body()).contains("line 2"));

    // The declared users, without their passwords.
    let (status, users) = alice.get("/users").await;
    assert_eq!(
        (status, users["items"].clone()),
        (StatusCode::OK, json!([]))
    );

    // A changefeed: a change made through the API arrives as an event; a second feed of the
    // same user is refused while the first is open (--max-database-feeds-per-user 1), and
    // taken once the first client has gone.
    let mut feed = alice.feed("/shop/items/changes").await;
    let (status, _) = alice
        .call(
            "PATCH",
            "/dbs/shop/tables/items/rows/b",
            Some(json!({"n": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let event = feed.next_event("change", TIMEOUT).await;
    assert_eq!(event["old_val"], json!({"sku": "b", "colour": "red"}));
    assert_eq!(
        event["new_val"],
        json!({"sku": "b", "colour": "red", "n": 3})
    );
    let (status, busy) = alice.get_sse("/shop/items/changes").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{busy}");
    drop(feed);
    eventually("the closed feed's place given back", TIMEOUT, || async {
        alice.try_feed("/shop/items/changes").await.map(drop)
    })
    .await;

    // Bob reads (RBAC `get`), and may not write; Carol, with no grant, may do neither.
    let (status, page) = bob.get("/dbs/shop/tables/items/rows").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(skus(&page), ["b", "c", "d", "e"]);
    let (status, refused) = bob
        .call(
            "POST",
            "/dbs/shop/tables/items/rows",
            Some(json!({"sku": "f"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, _) = carol.get("/dbs").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Deleted: the password is taken back from the proxy (by the 30 s sweep).
    databases
        .delete("inventory", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the admin password taken back", SCHEMA_TIMEOUT, || async {
        let handed = system.get_opt(CREDENTIALS).await.ok()??;
        (!handed.data.unwrap_or_default().contains_key(&key)).then_some(())
    })
    .await;
}
