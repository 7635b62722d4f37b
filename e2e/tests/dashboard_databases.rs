//! The dashboard's Databases section in a real browser: alice's GuildDatabase, made with
//! her kubectl identity through the stack's webhook and operator, served by reqlite
//! (`e2e/reqlite`) at its server's pod IP; `e2e/browser/databases.mjs` drives Debian's
//! headless Chromium through the stack's proxy as alice: the database listed with its
//! status, its rows paged, a row inserted, edited (seen live in the changes view) and
//! deleted, a table exported and imported. Screenshots land in
//! `target/e2e-artifacts/databases/`.
//!
//! Needs the stack (`scripts/e2e.sh`: the proxy, `GUILDNET_PROXY_URL`), root for the pods'
//! network namespace, `node`, `/usr/bin/chromium` and `e2e/browser/node_modules`.

use std::time::Duration;

use guildnet_api::GuildDatabase;
use guildnet_api::common::find_condition;
use guildnet_api::database::facts::ConditionType;
use guildnet_e2e::reqlite::Reqlite;
use guildnet_e2e::workspaces::wait_for;
use guildnet_e2e::{User, browser, client, token, unique_name};
use guildnet_rethinkdb::{Connection, Options, Reql, Term};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn alice_browses_edits_exports_imports_and_follows_her_database_in_the_browser() {
    let proxy = browser::proxy_url("dashboard_databases");
    let (alice, admin) = (client(User::Alice).await, client(User::Admin).await);
    // The stack lets guildnet:users work with Workspaces in default; alice may make
    // GuildDatabases there too, as an `edit` grant would let her.
    let apply = PatchParams::apply("guildnet-e2e").force();
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "guilddatabase-user", "namespace": "default"},
        "rules": [{"apiGroups": ["guildnet.io"], "resources": ["guilddatabases"],
                   "verbs": ["create", "get", "list", "watch", "delete"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), "default")
        .patch("guilddatabase-user", &apply, &Patch::Apply(&role))
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-guilddatabases", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "guilddatabase-user"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .patch("alice-guilddatabases", &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
    let name = unique_name("shelf");
    let databases: Api<GuildDatabase> = Api::namespaced(alice, "default");
    let db: GuildDatabase = serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
        "metadata": {"name": name},
        "spec": {
            "storage": {"size": "1Gi"},
            "databases": [{"name": "shop", "tables": [{"name": "items", "primaryKey": "sku"}]}],
        },
    }))
    .unwrap();
    databases.create(&PostParams::default(), &db).await.unwrap();
    wait_for(&databases, &name, "one ready server", |db| {
        db.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;

    let (server, password) = Reqlite::serve_database(&admin, "default", &name).await;
    // Long enough for a schema check after the longest connection backoff.
    tokio::time::timeout(Duration::from_secs(120), async {
        wait_for(&databases, &name, "the schema applied", |db| {
            db.status.as_ref().is_some_and(|s| {
                find_condition(&s.conditions, ConditionType::SchemaApplied)
                    .is_some_and(|c| c.reason == "AsDeclared")
            })
        })
        .await
    })
    .await
    .expect("the declared table made");
    let direct = Connection::open(&Options {
        addr: server.addr().to_string(),
        user: "admin".into(),
        password,
        connect_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
    })
    .await
    .unwrap();
    let rows: Vec<_> = (1..=3)
        .map(|i| json!({"sku": format!("s{i}"), "shelf": i}))
        .collect();
    direct
        .run(Term::insert("shop", "items", &rows))
        .await
        .unwrap();

    browser::run(
        "databases",
        vec![
            ("GUILDNET_PROXY_URL", proxy),
            ("GUILDNET_ALICE_TOKEN", token(User::Alice)),
            ("GUILDNET_DATABASE", name.clone()),
        ],
    )
    .await
    .assert_passed();
    // What the browser did is in the servers.
    let s9 = direct.run(Term::get("shop", "items", "s9")).await.unwrap();
    assert_eq!(s9, json!({"sku": "s9", "shelf": 9, "colour": "blue"}));
    let imported = direct.run(Term::get("shop", "items", "i1")).await.unwrap();
    assert_eq!(imported["shelf"], 11);

    databases
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}
