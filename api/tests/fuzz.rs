//! Property tests over the parsers of untrusted input in the shared policy: quantities,
//! image references and patterns, owner names, names and annotations. Whatever the input,
//! nothing panics, and what parses means the same when written back. `make test` runs a few
//! hundred cases per property; `make fuzz` runs many more (`PROPTEST_CASES`).

use guildnet_api::policy::{
    ImagePattern, ImageRef, QuantityStyle, format_milli, owner_id, owner_name, parse_milli,
};
use guildnet_api::workspace::{check_annotations, validate_name};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Strings shaped like quantities often, anything otherwise.
fn quantity_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+-]?[0-9]{0,20}(\\.[0-9]{0,6})?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[+-]?[0-9]{1,3}|E[0-9]{1,3})?",
        ".{0,24}",
    ]
}

/// Strings shaped like image references often, anything otherwise.
fn image_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "([a-z0-9.-]{1,12}(:[0-9]{1,5})?/)?[a-z0-9._/-]{1,24}(:[A-Za-z0-9._-]{1,12})?(@sha256:[0-9a-f]{0,64})?",
        ".{0,48}",
    ]
}

proptest! {
    #[test]
    fn quantities_parse_exactly_or_are_refused(text in quantity_like()) {
        if let Ok(milli) = parse_milli(&text) {
            for style in [QuantityStyle::DecimalSI, QuantityStyle::BinarySI] {
                let written = format_milli(milli, style);
                prop_assert_eq!(parse_milli(&written.0), Ok(milli), "{} written as {}", text, written.0);
            }
        }
    }

    #[test]
    fn image_references_normalise_once(text in image_like()) {
        if let Ok(reference) = ImageRef::parse(&text) {
            let again = ImageRef::parse(&reference.to_string());
            prop_assert_eq!(again, Ok(reference));
        }
        let _ = ImagePattern::parse(&text);
    }

    #[test]
    fn any_user_name_gives_a_label_value_and_a_printable_name(name in any::<String>()) {
        let id = owner_id(&name);
        prop_assert!(id.len() == 28 && id.starts_with("u-"));
        prop_assert!(id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let readable = owner_name(&name);
        prop_assert!(!readable.is_empty() && !readable.chars().any(char::is_control));
    }

    #[test]
    fn names_and_annotations_are_judged_without_panicking(name in ".{0,80}", snapshot in ".{0,80}") {
        let _ = validate_name(&name);
        let annotations = BTreeMap::from([("guildnet.io/snapshot".to_owned(), snapshot.clone())]);
        if check_annotations(&annotations).is_ok() && !snapshot.is_empty() {
            // What passes can name a Kubernetes object in a URL path.
            prop_assert!(snapshot.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }
}
