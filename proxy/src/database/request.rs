//! What a database API request asks, checked before anything reaches a server: database
//! and table names as RethinkDB allows them, the databases GuildNet keeps for itself, the
//! RBAC verb of a method, a page's query, a row's key, and the documents of a write. Each
//! refusal is a `400` naming the parameter and the fix. Pure: no I/O.

use guildnet_api::database::facts::{
    AUDIT_DATABASE, MAX_NAME_LENGTH, SYSTEM_DATABASE, is_valid_name,
};
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Rows in a page when the query does not say.
pub const DEFAULT_PAGE: u32 = 50;

/// The most rows a page may ask for.
pub const MAX_PAGE: u32 = 1000;

/// `name`, the `parameter` of a path or body, as `spec.databases` allows database and
/// table names ([`is_valid_name`]), so what the API makes could be declared too.
pub fn check_name(parameter: &str, name: &str) -> Result<(), ApiError> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{parameter} {name:?} is not a database or table name: use 1 to {MAX_NAME_LENGTH} \
         letters, digits and _"
    )))
}

/// A database the API serves: a valid name, and not one GuildNet or RethinkDB keeps for
/// itself (`rethinkdb`, whose `users` table holds password hashes, and `guildnet`, the
/// audit log, which is read at `/audit` and never written but by the proxy).
pub fn check_user_database(db: &str) -> Result<(), ApiError> {
    check_name("database", db)?;
    if db == SYSTEM_DATABASE || db == AUDIT_DATABASE {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ReservedDatabase",
            format!(
                "database {db:?} is kept by {}; use another database (its audit log is at \
                 /audit)",
                if db == SYSTEM_DATABASE {
                    "RethinkDB itself"
                } else {
                    "GuildNet"
                }
            ),
        ));
    }
    Ok(())
}

/// Whether the API lists `db` (not the reserved ones).
pub fn is_listed(db: &str) -> bool {
    db != SYSTEM_DATABASE && db != AUDIT_DATABASE
}

/// The RBAC verb on `guilddatabases/data` a request with `method` needs, as the API server
/// maps methods for other resources: reading is `get`; `POST` `create`, `PUT` `update`,
/// `PATCH` `patch`, `DELETE` `delete`.
pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

/// What a page of rows asks for (`GET …/rows`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageQuery {
    /// How many rows at most (`limit`, default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: u32,
    /// The rows after this primary key (`after`, as the previous page's `next` gave it:
    /// the key as JSON).
    pub after: Option<Value>,
    /// The fields each row must equal (`filter=field=value`, repeated; the value read as
    /// JSON when it is JSON, else as a string).
    pub matching: Option<Map<String, Value>>,
}

/// The page `query` (the URL's query string) asks for.
pub fn page_query(query: Option<&str>) -> Result<PageQuery, ApiError> {
    let mut page = PageQuery {
        limit: DEFAULT_PAGE,
        ..PageQuery::default()
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*name {
            "limit" => {
                page.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query parameter limit {value:?} is not a number from 1 to {MAX_PAGE}"
                        ))
                    })?;
            }
            "after" => {
                page.after = Some(serde_json::from_str(&value).map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter after {value:?} is not a key as JSON (a string in \
                         quotes, or a number): pass the `next` of the previous page"
                    ))
                })?);
            }
            "filter" => {
                let Some((field, wanted)) = value.split_once('=').filter(|(f, _)| !f.is_empty())
                else {
                    return Err(ApiError::bad_request(format!(
                        "query parameter filter {value:?} is not field=value, e.g. \
                         filter=colour=red or filter=count=3"
                    )));
                };
                let wanted = serde_json::from_str(wanted)
                    .unwrap_or_else(|_| Value::String(wanted.to_owned()));
                page.matching
                    .get_or_insert_with(Map::new)
                    .insert(field.to_owned(), wanted);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: a page takes limit, after and filter"
                )));
            }
        }
    }
    Ok(page)
}

/// The key of a row in a path (`…/rows/{key}`): a string, or with `?keyType=number` a
/// number (RethinkDB keys are strings or numbers; a number-like string stays a string).
pub fn row_key(key: &str, query: Option<&str>) -> Result<Value, ApiError> {
    let mut number = false;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (&*name, &*value) {
            ("keyType", "number") => number = true,
            ("keyType", "string") => number = false,
            ("keyType", other) => {
                return Err(ApiError::bad_request(format!(
                    "query parameter keyType {other:?} is neither string nor number"
                )));
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: a row takes keyType=string|number"
                )));
            }
        }
    }
    if !number {
        return Ok(Value::String(key.to_owned()));
    }
    serde_json::from_str::<serde_json::Number>(key)
        .map(Value::Number)
        .map_err(|_| {
            ApiError::bad_request(format!("row key {key:?} is not a number (keyType=number)"))
        })
}

/// A request body as JSON, or `400` saying where it is not.
pub fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}")))
}

/// The documents of an insert: one object, or a non-empty array of objects. A document
/// without its primary key gets one the server makes (returned in `generated_keys`).
pub fn documents_to_insert(body: Value) -> Result<Value, ApiError> {
    let all_objects = match &body {
        Value::Object(_) => true,
        Value::Array(items) => !items.is_empty() && items.iter().all(Value::is_object),
        _ => false,
    };
    if all_objects {
        Ok(body)
    } else {
        Err(ApiError::bad_request(
            "insert one row as a JSON object, or several as a non-empty array of objects",
        ))
    }
}

/// The document a `PUT` replaces row `key` with: an object whose primary key is `key`
/// (added when missing; another key is refused, as it would name another row).
pub fn replacement(body: Value, primary_key: &str, key: &Value) -> Result<Value, ApiError> {
    let Value::Object(mut document) = body else {
        return Err(ApiError::bad_request(
            "replace a row with a JSON object (the whole row)",
        ));
    };
    match document.get(primary_key) {
        None => {
            document.insert(primary_key.to_owned(), key.clone());
        }
        Some(given) if given == key => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the row's {primary_key} is {given} but the path names row {key}; a primary \
                 key cannot change: insert a new row and delete this one"
            )));
        }
    }
    Ok(Value::Object(document))
}

/// The fields a `PATCH` merges into row `key`: an object that leaves the primary key alone.
pub fn changes(body: Value, primary_key: &str, key: &Value) -> Result<Value, ApiError> {
    let Value::Object(fields) = &body else {
        return Err(ApiError::bad_request(
            "update a row with a JSON object of the fields to change",
        ));
    };
    if fields.get(primary_key).is_some_and(|given| given != key) {
        return Err(ApiError::bad_request(format!(
            "field {primary_key} is the primary key and cannot change"
        )));
    }
    Ok(body)
}

/// A write's result as RethinkDB reports it: how many rows each way, and the first error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows inserted, replaced, deleted.
    pub changed: u64,
    /// Rows the write found nothing to do to (`skipped`: no such row).
    pub skipped: u64,
    /// Rows refused (`errors`), the first with its reason.
    pub errors: u64,
    /// The server's first error.
    pub first_error: Option<String>,
}

impl Written {
    /// The counts of `result`.
    pub fn of(result: &Value) -> Self {
        let count = |field: &str| result.get(field).and_then(Value::as_u64).unwrap_or(0);
        Self {
            changed: count("inserted") + count("replaced") + count("deleted"),
            skipped: count("skipped"),
            errors: count("errors"),
            first_error: result
                .get("first_error")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// A write that did nothing because every row was refused: `409` with the server's
    /// reason (a key that is taken, most often).
    pub fn refusal(&self) -> Option<ApiError> {
        (self.errors > 0 && self.changed == 0).then(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "RowRefused",
                self.first_error
                    .clone()
                    .unwrap_or_else(|| "the server refused the write".into()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_what_spec_databases_allows() {
        for good in ["shop", "Shop_2", &"x".repeat(64)] {
            assert!(check_name("database", good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a-b", "a.b", "a/b", "é", &"x".repeat(65)] {
            let error = check_name("table", bad).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(error.message.starts_with("table "), "{}", error.message);
        }
    }

    #[test]
    fn the_system_and_audit_databases_are_not_served() {
        for reserved in ["rethinkdb", "guildnet"] {
            let error = check_user_database(reserved).unwrap_err();
            assert_eq!(error.status, StatusCode::FORBIDDEN);
            assert_eq!(error.reason, "ReservedDatabase");
            assert!(!is_listed(reserved));
        }
        assert!(check_user_database("shop").is_ok());
        assert!(is_listed("shop"));
    }

    #[test]
    fn each_method_asks_rbac_for_its_verb() {
        let verbs: Vec<_> = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ]
        .iter()
        .map(verb)
        .collect();
        assert_eq!(verbs, ["get", "create", "update", "patch", "delete"]);
    }

    #[test]
    fn a_page_query_reads_limit_after_and_filters() {
        assert_eq!(
            page_query(None).unwrap(),
            PageQuery {
                limit: DEFAULT_PAGE,
                ..PageQuery::default()
            }
        );
        let page = page_query(Some(
            "limit=2&after=%22b%22&filter=colour%3Dred&filter=count=3&filter=tag=%22x%22",
        ))
        .unwrap();
        assert_eq!(page.limit, 2);
        assert_eq!(page.after, Some(json!("b")));
        assert_eq!(
            Value::Object(page.matching.unwrap()),
            json!({"colour": "red", "count": 3, "tag": "x"})
        );
        for (query, names) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("after=b", "after"),
            ("filter=red", "filter"),
            ("filter==red", "filter"),
            ("offset=3", "offset"),
        ] {
            let error = page_query(Some(query)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(error.message.contains(names), "{query}: {}", error.message);
        }
    }

    #[test]
    fn a_row_key_is_a_string_unless_asked_for_a_number() {
        assert_eq!(row_key("7", None).unwrap(), json!("7"));
        assert_eq!(row_key("7", Some("keyType=number")).unwrap(), json!(7));
        assert_eq!(row_key("2.5", Some("keyType=number")).unwrap(), json!(2.5));
        assert!(row_key("seven", Some("keyType=number")).is_err());
        assert!(row_key("7", Some("keyType=uuid")).is_err());
    }

    #[test]
    fn writes_take_objects_and_keep_the_primary_key() {
        assert!(documents_to_insert(json!({"sku": "a"})).is_ok());
        assert!(documents_to_insert(json!([{"sku": "a"}, {}])).is_ok());
        for bad in [json!([]), json!([1]), json!("a"), json!(null)] {
            assert!(documents_to_insert(bad.clone()).is_err(), "{bad}");
        }
        let key = json!("a");
        assert_eq!(
            replacement(json!({"n": 1}), "sku", &key).unwrap(),
            json!({"sku": "a", "n": 1})
        );
        assert!(replacement(json!({"sku": "a"}), "sku", &key).is_ok());
        let moved = replacement(json!({"sku": "b"}), "sku", &key).unwrap_err();
        assert!(moved.message.contains("cannot change"), "{}", moved.message);
        assert!(replacement(json!([1]), "sku", &key).is_err());
        assert!(changes(json!({"n": 2}), "sku", &key).is_ok());
        assert!(changes(json!({"sku": "b"}), "sku", &key).is_err());
        assert!(changes(json!(3), "sku", &key).is_err());
    }

    #[test]
    fn a_write_every_row_of_which_was_refused_is_a_conflict() {
        let taken = Written::of(&json!({
            "inserted": 0, "errors": 1,
            "first_error": "Duplicate primary key `sku`"
        }));
        let refusal = taken.refusal().unwrap();
        assert_eq!(refusal.status, StatusCode::CONFLICT);
        assert!(refusal.message.contains("Duplicate primary key"));
        let partly = Written::of(&json!({"inserted": 1, "errors": 1}));
        assert_eq!(partly.changed, 1);
        assert!(partly.refusal().is_none());
        assert_eq!(Written::of(&json!({"skipped": 1})).skipped, 1);
    }

    #[test]
    fn a_body_that_is_not_json_says_where() {
        let error = json_body(b"{\"a\": ").unwrap_err();
        assert!(error.message.contains("line 1"), "{}", error.message);
        assert!(json_body(b"").is_err());
        assert_eq!(json_body(b"[1]").unwrap(), json!([1]));
    }
}
