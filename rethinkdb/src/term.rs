//! ReQL terms as the JSON protocol sends them: `[type, [args...], {optargs}]`, with data
//! as JSON and arrays in data wrapped in `MAKE_ARRAY` (a bare JSON array is a term). Built
//! as plain values, so a test reads exactly what a query sends.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Term type numbers, from RethinkDB's `ql2.proto` (`Term.TermType`); they never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum TermType {
    MakeArray = 2,
    Db = 14,
    Table = 15,
    Get = 16,
    Filter = 39,
    OrderBy = 41,
    Update = 53,
    Delete = 54,
    Replace = 55,
    Insert = 56,
    DbCreate = 57,
    DbDrop = 58,
    DbList = 59,
    TableCreate = 60,
    TableDrop = 61,
    TableList = 62,
    Limit = 71,
    Desc = 74,
    Info = 79,
    Changes = 152,
    Minval = 180,
    Maxval = 181,
    Between = 182,
    Grant = 188,
}

/// A ReQL term, ready to send.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Term(Value);

impl Term {
    fn new(kind: TermType, args: Vec<Term>, optargs: Option<Value>) -> Self {
        let args = Value::Array(args.into_iter().map(|a| a.0).collect());
        Term(match optargs {
            Some(optargs) => json!([kind as u32, args, optargs]),
            None => json!([kind as u32, args]),
        })
    }

    /// A value as a term: strings, numbers, booleans, null and objects as they are, arrays
    /// (at any depth) as `MAKE_ARRAY` of their elements.
    pub fn datum(value: impl Serialize) -> Self {
        fn encode(value: Value) -> Value {
            match value {
                Value::Array(items) => json!([
                    TermType::MakeArray as u32,
                    items.into_iter().map(encode).collect::<Vec<_>>()
                ]),
                Value::Object(fields) => Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k, encode(v)))
                        .collect::<Map<_, _>>(),
                ),
                other => other,
            }
        }
        Term(encode(serde_json::to_value(value).unwrap_or(Value::Null)))
    }

    /// The term as JSON.
    pub fn as_json(&self) -> &Value {
        &self.0
    }

    /// `r.db(name)`.
    pub fn db(name: &str) -> Self {
        Self::new(TermType::Db, vec![Term::datum(name)], None)
    }

    /// `r.db(db).table(name)`.
    pub fn table(db: &str, name: &str) -> Self {
        Self::new(TermType::Table, vec![Self::db(db), Term::datum(name)], None)
    }

    /// `r.dbList()`: the names of the databases.
    pub fn db_list() -> Self {
        Self::new(TermType::DbList, vec![], None)
    }

    /// `r.dbCreate(name)`.
    pub fn db_create(name: &str) -> Self {
        Self::new(TermType::DbCreate, vec![Term::datum(name)], None)
    }

    /// `r.dbDrop(name)`.
    pub fn db_drop(name: &str) -> Self {
        Self::new(TermType::DbDrop, vec![Term::datum(name)], None)
    }

    /// `r.db(db).tableList()`: the names of its tables.
    pub fn table_list(db: &str) -> Self {
        Self::new(TermType::TableList, vec![Self::db(db)], None)
    }

    /// `r.db(db).tableCreate(name, {primary_key})`.
    pub fn table_create(db: &str, name: &str, primary_key: &str) -> Self {
        Self::new(
            TermType::TableCreate,
            vec![Self::db(db), Term::datum(name)],
            Some(json!({ "primary_key": primary_key })),
        )
    }

    /// `r.db(db).tableDrop(name)`.
    pub fn table_drop(db: &str, name: &str) -> Self {
        Self::new(
            TermType::TableDrop,
            vec![Self::db(db), Term::datum(name)],
            None,
        )
    }

    /// `r.db('rethinkdb').table('users').insert({id: name, password}, {conflict: 'update'})`:
    /// creates the user, or sets the password of the user of that name (RethinkDB keeps
    /// users as documents of its `users` system table; a password cannot be read back).
    pub fn user_set_password(name: &str, password: &str) -> Self {
        Self::new(
            TermType::Insert,
            vec![
                Self::table("rethinkdb", "users"),
                Term::datum(json!({ "id": name, "password": password })),
            ],
            Some(json!({ "conflict": "update" })),
        )
    }

    /// `r.db(db).grant(user, {read, write, config})`: the user's permissions on a database,
    /// each `true` or `false` (an explicit deny).
    pub fn grant(db: &str, user: &str, read: bool, write: bool, config: bool) -> Self {
        Self::new(
            TermType::Grant,
            vec![
                Self::db(db),
                Term::datum(user),
                Term::datum(json!({ "read": read, "write": write, "config": config })),
            ],
            None,
        )
    }

    /// `r.db(db).table(table).insert(documents)`: one document or an array of them; a
    /// document whose key is taken is refused (counted in `errors`), not overwritten.
    pub fn insert(db: &str, table: &str, documents: impl Serialize) -> Self {
        Self::new(
            TermType::Insert,
            vec![Self::table(db, table), Term::datum(documents)],
            None,
        )
    }

    /// `r.db(db).table(table).insert(documents, {conflict})`: as [`insert`](Self::insert),
    /// but a document whose key is taken is refused (`error`), replaces the one there
    /// (`replace`) or is merged into it (`update`).
    pub fn insert_on_conflict(
        db: &str,
        table: &str,
        documents: impl Serialize,
        conflict: &str,
    ) -> Self {
        Self::new(
            TermType::Insert,
            vec![Self::table(db, table), Term::datum(documents)],
            Some(json!({ "conflict": conflict })),
        )
    }

    /// `r.db(db).table(table).get(key)`: the document, or `null`.
    pub fn get(db: &str, table: &str, key: impl Serialize) -> Self {
        Self::new(
            TermType::Get,
            vec![Self::table(db, table), Term::datum(key)],
            None,
        )
    }

    /// `r.db(db).table(table).info()`: its name, database and `primary_key`.
    pub fn table_info(db: &str, table: &str) -> Self {
        Self::new(TermType::Info, vec![Self::table(db, table)], None)
    }

    /// One page of a table in primary-key order: the first `limit` documents whose key is
    /// after `after` (from the start without it) and, with `matching`, whose fields equal
    /// it (`{field: value}`):
    /// `table.between(after | r.minval, r.maxval, {left_bound}).orderBy({index: primary_key})
    /// .filter(matching).limit(limit)`. Walking by key, not by offset, keeps each page as
    /// cheap as the first and skips nothing written meanwhile.
    pub fn page(
        db: &str,
        table: &str,
        primary_key: &str,
        after: Option<&Value>,
        matching: Option<&Map<String, Value>>,
        limit: u32,
    ) -> Self {
        let (from, left_bound) = match after {
            Some(key) => (Term::datum(key), "open"),
            None => (Self::new(TermType::Minval, vec![], None), "closed"),
        };
        let mut rows = Self::new(
            TermType::Between,
            vec![
                Self::table(db, table),
                from,
                Self::new(TermType::Maxval, vec![], None),
            ],
            Some(json!({ "left_bound": left_bound, "right_bound": "open" })),
        );
        rows = Self::new(
            TermType::OrderBy,
            vec![rows],
            Some(json!({ "index": primary_key })),
        );
        if let Some(matching) = matching {
            rows = Self::new(TermType::Filter, vec![rows, Term::datum(matching)], None);
        }
        Self::new(TermType::Limit, vec![rows, Term::datum(limit)], None)
    }

    /// Every document of a table in primary-key order, for reading through a
    /// [`Cursor`](crate::Cursor) batch by batch:
    /// `r.db(db).table(table).orderBy({index: primary_key})`.
    pub fn by_key(db: &str, table: &str, primary_key: &str) -> Self {
        Self::new(
            TermType::OrderBy,
            vec![Self::table(db, table)],
            Some(json!({ "index": primary_key })),
        )
    }

    /// The changes of a table as they happen, each `{old_val, new_val}` (`null` for an
    /// insert's old and a delete's new): `r.db(db).table(table).changes()`. Never ends by
    /// itself: read it through a [`Cursor`](crate::Cursor).
    pub fn changes(db: &str, table: &str) -> Self {
        Self::new(TermType::Changes, vec![Self::table(db, table)], None)
    }

    /// The newest `limit` documents of a table by `field`, newest first:
    /// `r.db(db).table(table).orderBy(r.desc(field)).limit(limit)` (a scan: for small
    /// tables, such as an audit log read a page at a time).
    pub fn newest(db: &str, table: &str, field: &str, limit: u32) -> Self {
        let ordered = Self::new(
            TermType::OrderBy,
            vec![
                Self::table(db, table),
                Self::new(TermType::Desc, vec![Term::datum(field)], None),
            ],
            None,
        );
        Self::new(TermType::Limit, vec![ordered, Term::datum(limit)], None)
    }

    /// `r.db(db).table(table).get(key).replace(document)`: the whole document replaced, or
    /// inserted when there is none (its key must be `key`).
    pub fn replace(db: &str, table: &str, key: impl Serialize, document: impl Serialize) -> Self {
        Self::new(
            TermType::Replace,
            vec![Self::get(db, table, key), Term::datum(document)],
            None,
        )
    }

    /// `r.db(db).table(table).get(key).update(fields)`: the fields merged into the
    /// document (nothing happens when there is none: `skipped`).
    pub fn update(db: &str, table: &str, key: impl Serialize, fields: impl Serialize) -> Self {
        Self::new(
            TermType::Update,
            vec![Self::get(db, table, key), Term::datum(fields)],
            None,
        )
    }

    /// `r.db(db).table(table).get(key).delete()`.
    pub fn delete(db: &str, table: &str, key: impl Serialize) -> Self {
        Self::new(TermType::Delete, vec![Self::get(db, table, key)], None)
    }
}

#[cfg(test)]
mod tests {
    //! The shapes here are checked against RethinkDB's `ql2.proto` (term numbers and
    //! argument order) and the JavaScript driver's serialisation of the same calls, as the
    //! RethinkDB documentation writes them.
    use super::*;

    #[test]
    fn terms_are_serialised_as_the_json_protocol_wants() {
        assert_eq!(Term::db_list().as_json(), &json!([59, []]));
        assert_eq!(Term::db_create("shop").as_json(), &json!([57, ["shop"]]));
        assert_eq!(
            Term::table_list("shop").as_json(),
            &json!([62, [[14, ["shop"]]]])
        );
        assert_eq!(
            Term::table_create("shop", "items", "sku").as_json(),
            &json!([60, [[14, ["shop"]], "items"], {"primary_key": "sku"}])
        );
        assert_eq!(
            Term::table_drop("shop", "items").as_json(),
            &json!([61, [[14, ["shop"]], "items"]])
        );
        assert_eq!(
            Term::insert("shop", "items", json!({"id": 1, "tags": ["a"]})).as_json(),
            &json!([56, [[15, [[14, ["shop"]], "items"]], {"id": 1, "tags": [2, ["a"]]}]])
        );
        assert_eq!(
            Term::get("shop", "items", 7).as_json(),
            &json!([16, [[15, [[14, ["shop"]], "items"]], 7]])
        );
    }

    #[test]
    fn a_user_is_a_document_of_the_users_system_table() {
        // r.db('rethinkdb').table('users').insert({id: 'alice', password: 'pw'}, {conflict: 'update'})
        assert_eq!(
            Term::user_set_password("alice", "pw").as_json(),
            &json!([56, [
                [15, [[14, ["rethinkdb"]], "users"]],
                {"id": "alice", "password": "pw"}
            ], {"conflict": "update"}])
        );
    }

    #[test]
    fn a_grant_names_the_database_the_user_and_every_permission() {
        // r.db('shop').grant('alice', {read: true, write: false, config: false})
        assert_eq!(
            Term::grant("shop", "alice", true, false, false).as_json(),
            &json!([188, [
                [14, ["shop"]],
                "alice",
                {"read": true, "write": false, "config": false}
            ]])
        );
    }

    #[test]
    fn a_page_walks_the_primary_key_from_after_the_last_one_seen() {
        let table = json!([15, [[14, ["shop"]], "items"]]);
        // r.db('shop').table('items').between(r.minval, r.maxval, {left_bound: 'closed',
        //   right_bound: 'open'}).orderBy({index: 'sku'}).limit(2)
        assert_eq!(
            Term::page("shop", "items", "sku", None, None, 2).as_json(),
            &json!([71, [
                [41, [
                    [182, [table, [180, []], [181, []]], {"left_bound": "closed", "right_bound": "open"}]
                ], {"index": "sku"}],
                2
            ]])
        );
        // ...between('a-7', r.maxval, {left_bound: 'open', ...}).orderBy(...)
        //   .filter({colour: 'red', tags: ['x']}).limit(50)
        let matching = json!({"colour": "red", "tags": ["x"]});
        assert_eq!(
            Term::page(
                "shop",
                "items",
                "sku",
                Some(&json!("a-7")),
                matching.as_object(),
                50
            )
            .as_json(),
            &json!([71, [
                [39, [
                    [41, [
                        [182, [table, "a-7", [181, []]], {"left_bound": "open", "right_bound": "open"}]
                    ], {"index": "sku"}],
                    {"colour": "red", "tags": [2, ["x"]]}
                ]],
                50
            ]])
        );
    }

    #[test]
    fn one_document_is_read_replaced_updated_and_deleted_by_its_key() {
        let get = json!([16, [[15, [[14, ["shop"]], "items"]], "a-7"]]);
        assert_eq!(
            Term::table_info("shop", "items").as_json(),
            &json!([79, [[15, [[14, ["shop"]], "items"]]]])
        );
        assert_eq!(
            Term::replace("shop", "items", "a-7", json!({"sku": "a-7", "n": [1]})).as_json(),
            &json!([55, [get, {"sku": "a-7", "n": [2, [1]]}]])
        );
        assert_eq!(
            Term::update("shop", "items", "a-7", json!({"n": 2})).as_json(),
            &json!([53, [get, {"n": 2}]])
        );
        assert_eq!(
            Term::delete("shop", "items", "a-7").as_json(),
            &json!([54, [get]])
        );
        let table = json!([15, [[14, ["shop"]], "items"]]);
        // r.db('shop').table('items').insert([{sku: 'a'}], {conflict: 'update'})
        assert_eq!(
            Term::insert_on_conflict("shop", "items", json!([{"sku": "a"}]), "update").as_json(),
            &json!([56, [table.clone(), [2, [{"sku": "a"}]]], {"conflict": "update"}])
        );
        // r.db('shop').table('items').orderBy({index: 'sku'})
        assert_eq!(
            Term::by_key("shop", "items", "sku").as_json(),
            &json!([41, [table.clone()], {"index": "sku"}])
        );
        // r.db('shop').table('items').changes()
        assert_eq!(
            Term::changes("shop", "items").as_json(),
            &json!([152, [table]])
        );
        // r.db('shop').table('log').orderBy(r.desc('at')).limit(20)
        assert_eq!(
            Term::newest("shop", "log", "at", 20).as_json(),
            &json!([
                71,
                [[41, [[15, [[14, ["shop"]], "log"]], [74, ["at"]]]], 20]
            ])
        );
    }

    #[test]
    fn arrays_in_data_are_made_not_evaluated() {
        assert_eq!(
            Term::datum(json!({"tags": ["a", ["b"]], "n": 1})).as_json(),
            &json!({"tags": [2, ["a", [2, ["b"]]]], "n": 1})
        );
    }
}
