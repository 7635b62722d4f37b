//! The admission decisions for GuildDatabases (`guildnet_webhook::database`), from
//! AdmissionReviews shaped as the API server sends them: the owner set and kept, who may
//! create (a `databases` grant), the grant's ceilings, Quota storage counted with the
//! owner's workspaces and databases, and who may change or delete one.

use guildnet_api::policy::owner_id;
use guildnet_api::{Capabilities, GuildDatabase, Quota, Workspace};
use guildnet_webhook::admission::{Decision, Settings, Snapshot};
use guildnet_webhook::database;
use guildnet_webhook::review;
use serde_json::{Value, json};
use std::sync::Arc;

const OPERATOR: &str = "system:serviceaccount:guildnet-system:guildnet-operator";

fn review(operation: &str, user: &str, object: Value, old: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "guildnet.io", "version": "v1alpha1", "kind": "GuildDatabase"},
            "resource": {"group": "guildnet.io", "version": "v1alpha1", "resource": "guilddatabases"},
            "name": "app",
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {"username": user, "groups": ["guildnet:users", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

fn db(spec: Value, owner: Option<&str>) -> Value {
    let mut object = json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "GuildDatabase",
        "metadata": {"name": "app", "namespace": "team-a", "labels": {"guildnet.io/owner": "u-spoofed"}},
        "spec": spec
    });
    if let Some(name) = owner {
        object["metadata"]["labels"]["guildnet.io/owner"] = json!(owner_id(name));
        object["metadata"]["annotations"] = json!({"guildnet.io/owner-name": name});
    }
    object
}

fn capabilities(name: &str, spec: Value) -> Capabilities {
    serde_json::from_value(json!({
        "apiVersion": "guildnet.io/v1alpha1", "kind": "Capabilities",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// guildnet:users may run workspaces, and databases of up to 3 servers of 10Gi.
fn developers() -> Capabilities {
    capabilities(
        "developers",
        json!({
            "subjects": [{"kind": "Group", "name": "guildnet:users"}],
            "images": {"allow": ["nginx:*"]},
            "resources": {"maxPerWorkspace": {"cpu": "4", "memory": "8Gi"}},
            "databases": {"maxReplicas": 3, "maxStorage": "10Gi"}
        }),
    )
}

fn settings() -> Settings {
    Settings {
        trusted_users: vec![OPERATOR.to_owned()],
        system_namespace: "guildnet-system".to_owned(),
    }
}

fn snapshot(capabilities: Vec<Capabilities>) -> Snapshot {
    Snapshot {
        capabilities,
        ..Snapshot::default()
    }
}

fn validate(review: &Value, snapshot: &Snapshot) -> Decision {
    let review = review::decode(&serde_json::to_vec(review).unwrap()).unwrap();
    database::validate(&review, &settings(), snapshot)
}

fn reason(decision: &Decision) -> &'static str {
    let refusal = decision.outcome.as_ref().expect_err("a refusal");
    assert!(!decision.response.allowed);
    assert_eq!(decision.response.result.code, refusal.code());
    refusal.reason()
}

fn message(decision: &Decision) -> String {
    decision.response.result.message.clone()
}

fn allowed(decision: &Decision) {
    assert_eq!(decision.outcome, Ok(()), "{}", message(decision));
}

#[test]
fn a_create_gets_its_requesters_owner_and_an_update_keeps_it() {
    let create = review(
        "CREATE",
        "alice",
        db(json!({"storage": {"size": "1Gi"}}), None),
        json!(null),
    );
    let decoded = review::decode::<GuildDatabase>(&serde_json::to_vec(&create).unwrap()).unwrap();
    let decision = database::mutate(&decoded);
    let mut object = create["request"]["object"].clone();
    let patch: json_patch::Patch =
        serde_json::from_slice(&decision.response.patch.unwrap()).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["metadata"]["labels"]["guildnet.io/owner"],
        owner_id("alice"),
        "the spoofed label replaced"
    );
    assert_eq!(
        object["metadata"]["annotations"]["guildnet.io/owner-name"],
        "alice"
    );

    // bob (an admin, say) edits it: the owner stays alice.
    let update = review(
        "UPDATE",
        "bob",
        db(json!({"storage": {"size": "2Gi"}}), None),
        db(json!({"storage": {"size": "1Gi"}}), Some("alice")),
    );
    let decoded = review::decode::<GuildDatabase>(&serde_json::to_vec(&update).unwrap()).unwrap();
    let decision = database::mutate(&decoded);
    let mut object = update["request"]["object"].clone();
    let patch: json_patch::Patch =
        serde_json::from_slice(&decision.response.patch.unwrap()).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["metadata"]["labels"]["guildnet.io/owner"],
        owner_id("alice")
    );
}

#[test]
fn only_a_databases_grant_lets_a_user_create_one_within_its_ceilings() {
    let small = || db(json!({"storage": {"size": "5Gi"}}), None);
    let mut without = developers();
    without.spec.databases = None;
    let refused = validate(
        &review("CREATE", "alice", small(), json!(null)),
        &snapshot(vec![without]),
    );
    assert_eq!(reason(&refused), "NoCapabilities");
    assert!(
        message(&refused).contains("spec.databases"),
        "{}",
        message(&refused)
    );

    let granted = snapshot(vec![developers()]);
    allowed(&validate(
        &review("CREATE", "alice", small(), json!(null)),
        &granted,
    ));
    let cases = [
        (
            json!({"replicas": 5, "storage": {"size": "1Gi"}}),
            "ResourceLimitExceeded",
        ),
        (
            json!({"storage": {"size": "50Gi"}}),
            "ResourceLimitExceeded",
        ),
        (
            json!({"image": "docker.io/evil/miner:1", "storage": {"size": "1Gi"}}),
            "ImageDenied",
        ),
    ];
    for (spec, expected) in cases {
        let decision = validate(
            &review("CREATE", "alice", db(spec.clone(), None), json!(null)),
            &granted,
        );
        assert_eq!(reason(&decision), expected, "{spec}");
    }
    // The operator is trusted: it never needs a grant.
    allowed(&validate(
        &review("CREATE", OPERATOR, small(), json!(null)),
        &snapshot(vec![]),
    ));
}

#[test]
fn database_storage_counts_against_quotas_with_the_owners_workspaces_and_databases() {
    let quota: Arc<Quota> = Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "Quota",
            "metadata": {"name": "storage", "namespace": "team-a"},
            "spec": {"perOwner": {"storage": "22Gi"}}
        }))
        .unwrap(),
    );
    let workspace: Arc<Workspace> = Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "ide", "namespace": "team-a", "labels": {"guildnet.io/owner": owner_id("alice")}},
            "spec": {"image": "nginx", "volumes": [{"name": "home", "mountPath": "/home", "persistent": {"size": "8Gi"}}]}
        }))
        .unwrap(),
    );
    let other: Arc<GuildDatabase> = Arc::new(
        serde_json::from_value(db(
            json!({"replicas": 2, "storage": {"size": "4Gi"}}),
            Some("alice"),
        ))
        .unwrap(),
    );
    let mut other_named = (*other).clone();
    other_named.metadata.name = Some("other".into());
    let snapshot = Snapshot {
        capabilities: vec![developers()],
        quotas: vec![quota],
        workspaces: vec![workspace],
        databases: vec![Arc::new(other_named)],
        ..Snapshot::default()
    };
    // 8Gi (workspace) + 2 × 4Gi (the other database) = 16Gi of 22Gi used: 2 × 2Gi fits,
    // 3 × 3Gi does not.
    let fits = db(json!({"replicas": 2, "storage": {"size": "2Gi"}}), None);
    allowed(&validate(
        &review("CREATE", "alice", fits, json!(null)),
        &snapshot,
    ));
    let over = db(json!({"replicas": 3, "storage": {"size": "3Gi"}}), None);
    let refused = validate(&review("CREATE", "alice", over, json!(null)), &snapshot);
    assert_eq!(reason(&refused), "QuotaExceeded");
    assert_eq!(refused.response.result.code, 429);

    // Growing this database (16Gi + its 4Gi used) counts what it adds, not what it had.
    let grow = review(
        "UPDATE",
        "alice",
        db(
            json!({"replicas": 2, "storage": {"size": "3Gi"}}),
            Some("alice"),
        ),
        db(
            json!({"replicas": 2, "storage": {"size": "2Gi"}}),
            Some("alice"),
        ),
    );
    allowed(&validate(&grow, &snapshot));
    let too_much = review(
        "UPDATE",
        "alice",
        db(
            json!({"replicas": 3, "storage": {"size": "3Gi"}}),
            Some("alice"),
        ),
        db(
            json!({"replicas": 2, "storage": {"size": "2Gi"}}),
            Some("alice"),
        ),
    );
    assert_eq!(reason(&validate(&too_much, &snapshot)), "QuotaExceeded");
}

#[test]
fn only_the_owner_or_an_admin_changes_or_deletes_a_database() {
    let admins = capabilities(
        "admins",
        json!({"subjects": [{"kind": "User", "name": "carol"}], "admin": true}),
    );
    let snapshot = snapshot(vec![developers(), admins]);
    let stored = || db(json!({"storage": {"size": "1Gi"}}), Some("alice"));
    let changed = || db(json!({"storage": {"size": "2Gi"}}), Some("alice"));
    for (user, allowed_) in [("alice", true), ("bob", false), ("carol", true)] {
        let delete = validate(&review("DELETE", user, json!(null), stored()), &snapshot);
        let update = validate(&review("UPDATE", user, changed(), stored()), &snapshot);
        if allowed_ {
            allowed(&delete);
            allowed(&update);
        } else {
            assert_eq!(reason(&delete), "NotOwner");
            assert_eq!(reason(&update), "NotOwner");
        }
    }
}

#[test]
fn user_password_secrets_are_reviewed_as_the_requester_and_refused_when_unreadable() {
    use guildnet_api::policy::references::{Reference, ReferenceKind};
    use guildnet_webhook::admission::DeniedReference;
    let with_users = |secrets: &[&str]| {
        let users: Vec<Value> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"name": format!("u{i}"), "passwordSecretRef": {"name": s}}))
            .collect();
        db(
            json!({"storage": {"size": "1Gi"}, "users": users}),
            Some("alice"),
        )
    };
    let decode = |review: &Value| {
        review::decode::<GuildDatabase>(&serde_json::to_vec(review).unwrap()).unwrap()
    };
    // Every Secret on a create; only the new ones on an update; none for trusted users.
    let create = review(
        "CREATE",
        "alice",
        with_users(&["a-pw", "b-pw"]),
        json!(null),
    );
    let names = |refs: Vec<Reference>| refs.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(database::references_to_review(
            &decode(&create),
            &settings()
        )),
        ["a-pw", "b-pw"]
    );
    let update = review(
        "UPDATE",
        "alice",
        with_users(&["a-pw", "c-pw"]),
        with_users(&["a-pw"]),
    );
    let added = database::references_to_review(&decode(&update), &settings());
    assert_eq!(added[0].field, "spec.users[1].passwordSecretRef");
    assert_eq!(names(added), ["c-pw"]);
    let by_operator = review("CREATE", OPERATOR, with_users(&["a-pw"]), json!(null));
    assert!(database::references_to_review(&decode(&by_operator), &settings()).is_empty());

    let mut snapshot = snapshot(vec![developers()]);
    snapshot.denied_references = vec![DeniedReference {
        reader: "alice".into(),
        reference: Reference {
            kind: ReferenceKind::Secret,
            name: "b-pw".into(),
            field: "spec.users[1].passwordSecretRef".into(),
        },
    }];
    let refused = validate(&create, &snapshot);
    assert_eq!(reason(&refused), "ReferenceDenied");
    assert!(
        message(&refused).contains(
            "spec.users[1].passwordSecretRef names Secret team-a/b-pw, which alice may not get"
        ),
        "{}",
        message(&refused)
    );
}
