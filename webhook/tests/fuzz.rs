//! Property tests over untrusted input (the API server relays what users send): whatever
//! arrives, decoding and deciding never panic, and an answer always names the request it
//! answers. `make test` runs a few hundred cases per property; `make fuzz` runs many more
//! (`PROPTEST_CASES`), within a time bound.

use guildnet_webhook::admission::{self, Settings, Snapshot};
use guildnet_webhook::review;
use proptest::prelude::*;
use serde_json::{Value, json};

fn settings() -> Settings {
    Settings {
        trusted_users: vec![
            "system:serviceaccount:guildnet-system:guildnet-operator".into(),
            "system:serviceaccount:guildnet-system:guildnet-proxy".into(),
        ],
        system_namespace: "guildnet-system".into(),
    }
}

/// Arbitrary JSON, a few levels deep, with the keys a Workspace spec has so that the
/// decoder gets past the outer shape often.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("image".to_owned()),
        Just("env".to_owned()),
        Just("ports".to_owned()),
        Just("resources".to_owned()),
        Just("volumes".to_owned()),
        Just("exposure".to_owned()),
        Just("lifecycle".to_owned()),
        Just("imagePullSecrets".to_owned()),
        "[a-zA-Z]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop_oneof![
            Just("-8"),
            Just("1e400"),
            Just("500m"),
            Just("8Gi"),
            Just("0.0001")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn operation() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("CREATE"),
        Just("UPDATE"),
        Just("DELETE"),
        Just("CONNECT")
    ]
}

proptest! {
    #[test]
    fn any_bytes_are_decoded_or_refused_without_panicking(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = review::decode::<guildnet_api::Workspace>(&body);
        let _ = review::decode::<guildnet_api::GuildDatabase>(&body);
    }

    #[test]
    fn any_review_is_decided_and_answered_for_its_own_uid(
        spec in json_value(),
        old_spec in json_value(),
        labels in prop::collection::btree_map("[a-z./-]{1,30}", ".{0,20}", 0..4),
        annotations in prop::collection::btree_map("[a-z./-]{1,30}", ".{0,40}", 0..4),
        operation in operation(),
        user in ".{0,30}",
        dry_run in any::<bool>(),
    ) {
        let object = |spec: &Value| json!({
            "apiVersion": "guildnet.io/v1alpha1", "kind": "Workspace",
            "metadata": {"name": "ws", "namespace": "default", "labels": labels, "annotations": annotations},
            "spec": spec,
        });
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "fuzz-uid", "kind": {"group": "guildnet.io", "version": "v1alpha1", "kind": "Workspace"},
                "resource": {"group": "guildnet.io", "version": "v1alpha1", "resource": "workspaces"},
                "name": "ws", "namespace": "default", "operation": operation, "dryRun": dry_run,
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": object(&spec), "oldObject": object(&old_spec),
            }
        });
        let Ok(decoded) = review::decode(&serde_json::to_vec(&body).unwrap()) else {
            return Ok(());
        };
        let mutated = admission::mutate(&decoded);
        prop_assert_eq!(mutated.response.uid.as_str(), "fuzz-uid");
        let validated = admission::validate(&decoded, &settings(), &Snapshot::default());
        prop_assert_eq!(validated.response.uid.as_str(), "fuzz-uid");
        let _ = admission::references_to_review(&decoded, &settings());
    }
}
