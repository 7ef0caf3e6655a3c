//! The one way recur writes status: a JSON patch that first *tests* a precondition and then
//! replaces `/status`. The tests make the write a compare-and-swap on exactly what matters (the
//! pending occurrence's key, and for a reminder its attempt count too), so a stale replica or a stale cache can never overwrite newer
//! progress, while edits of labels or annotations by others (which bump resourceVersion) do not
//! conflict with it.
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{Error, MANAGER};

/// The precondition of a status write.
#[derive(Clone, Debug)]
pub enum Guard {
    /// Each path (a JSON pointer) must hold its value.
    Equals(Vec<(&'static str, Value)>),
    /// Nothing else may have changed the object (used when there is no key to compare).
    ResourceVersion(String),
}

/// What happened to a status write.
#[derive(Debug)]
pub enum StatusWrite<K> {
    /// Written; the object as the API server returned it.
    Written(Box<K>),
    /// The precondition no longer held: someone else wrote first. Re-read and decide again.
    Conflict,
}

/// Replaces the status of `name` with `status` if `guard` holds.
pub async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    guard: Guard,
    status: &S,
) -> Result<StatusWrite<K>, Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    S: Serialize,
{
    let set = json!({ "op": "add", "path": "/status", "value": status });
    guarded_patch(api, name, guard, vec![set], true).await
}

/// An array of the status that the watch cache does not hold (a task's `history`): the object
/// holds `held` items; a write puts its new ones first and keeps at most `limit`.
#[derive(Clone, Copy, Debug)]
pub struct Prepended {
    pub field: &'static str,
    pub held: usize,
    pub limit: usize,
}

/// Writes `after` over `before` (the status as cached, without `prepended.field`) field by
/// field if `guard` holds: each field of `after` set, each field only `before` has removed, and
/// `after`'s items of `prepended.field` (all of them new) put first, with those past the limit
/// dropped. What the object holds of that field is never sent back.
pub async fn write_fields<K, S>(
    api: &Api<K>,
    name: &str,
    guard: Guard,
    before: &S,
    after: &S,
    prepended: Prepended,
) -> Result<StatusWrite<K>, Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    S: Serialize,
{
    let ops = field_ops(&fields(before)?, fields(after)?, prepended);
    guarded_patch(api, name, guard, ops, true).await
}

/// A status's top-level fields.
fn fields<S: Serialize>(status: &S) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(status)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::Patch(serde::ser::Error::custom(
            "a status is written field by field only when it is an object",
        ))),
    }
}

/// The JSON-patch operations of [`write_fields`].
fn field_ops(
    before: &Map<String, Value>,
    mut after: Map<String, Value>,
    p: Prepended,
) -> Vec<Value> {
    let added = match after.remove(p.field) {
        Some(Value::Array(items)) => items,
        _ => vec![],
    };
    let path = |field: &str| format!("/status/{}", field.replace('~', "~0").replace('/', "~1"));
    let mut ops: Vec<Value> = before
        .keys()
        .filter(|k| k.as_str() != p.field && !after.contains_key(k.as_str()))
        .map(|k| json!({ "op": "remove", "path": path(k) }))
        .collect();
    ops.extend(
        after
            .into_iter()
            .map(|(k, v)| json!({ "op": "add", "path": path(&k), "value": v })),
    );
    if added.is_empty() {
        return ops;
    }
    let array = path(p.field);
    let total = p.held + added.len();
    if p.held == 0 {
        let mut items = added;
        items.truncate(p.limit);
        ops.push(json!({ "op": "add", "path": array, "value": items }));
        return ops;
    }
    // Oldest new item first, so the newest ends up at index 0.
    ops.extend(
        added
            .into_iter()
            .rev()
            .map(|item| json!({ "op": "add", "path": format!("{array}/0"), "value": item })),
    );
    // From the end, so each index is still where it was counted.
    ops.extend(
        (p.limit..total)
            .rev()
            .map(|i| json!({ "op": "remove", "path": format!("{array}/{i}") })),
    );
    ops
}

/// Applies JSON-patch `ops` to the object (or its status subresource) if `guard` holds: the one
/// way recur changes what it did not just create.
pub async fn guarded_patch<K>(
    api: &Api<K>,
    name: &str,
    guard: Guard,
    ops: Vec<Value>,
    status: bool,
) -> Result<StatusWrite<K>, Error>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let tests: Vec<(&str, Value)> = match guard {
        Guard::Equals(fields) => fields,
        Guard::ResourceVersion(rv) => vec![("/metadata/resourceVersion", Value::String(rv))],
    };
    let mut all: Vec<Value> = tests
        .iter()
        .map(|(path, value)| json!({ "op": "test", "path": path, "value": value }))
        .collect();
    all.extend(ops);
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(all))?;
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = Patch::Json::<()>(patch);
    let result = if status {
        api.patch_status(name, &params, &patch).await
    } else {
        api.patch(name, &params, &patch).await
    };
    match result {
        Ok(obj) => Ok(StatusWrite::Written(Box::new(obj))),
        Err(err) => match refusal(&err) {
            Refusal::Conflict => Ok(StatusWrite::Conflict),
            Refusal::Other => Err(err.into()),
            // The same 422 comes from an admission policy or webhook refusing the write: only
            // the object itself tells whether our test failed.
            Refusal::Ambiguous => {
                // Gone meanwhile: nothing to write; the next reconcile sees it gone.
                let Some(now) = api.get_opt(name).await? else {
                    return Ok(StatusWrite::Conflict);
                };
                if holds(&tests, &serde_json::to_value(now)?) {
                    Err(err.into())
                } else {
                    Ok(StatusWrite::Conflict)
                }
            }
        },
    }
}

impl Guard {
    /// Whether the guard holds in `object` (as JSON).
    pub fn holds_in(&self, object: &Value) -> bool {
        match self {
            Guard::Equals(fields) => holds(fields, object),
            Guard::ResourceVersion(rv) => {
                object.pointer("/metadata/resourceVersion") == Some(&Value::String(rv.clone()))
            }
        }
    }
}

/// Whether every `(pointer, value)` of a guard holds in `object`.
fn holds(tests: &[(&str, Value)], object: &Value) -> bool {
    tests
        .iter()
        .all(|(path, value)| object.pointer(path) == Some(value))
}

/// What a refused patch means for the guard.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Someone else wrote first.
    Conflict,
    /// Not about the guard (schema, rights, availability).
    Other,
    /// A 422 that is either our `test` failing or an admission refusal.
    Ambiguous,
}

/// 409 is a plain optimistic-concurrency conflict. A failed `test` operation is answered 422
/// Invalid with the generic "the server rejected our request" and at most an unnamed cause, and so
/// is a ValidatingAdmissionPolicy's denial with its default reason: ambiguous. A 422 whose causes
/// name a field is our status failing the schema: an error.
fn refusal(err: &kube::Error) -> Refusal {
    let kube::Error::Api(status) = err else {
        return Refusal::Other;
    };
    match status.code {
        409 => Refusal::Conflict,
        422 => {
            let causes = status
                .details
                .as_ref()
                .map(|d| d.causes.as_slice())
                .unwrap_or(&[]);
            // Not the message: an object named "test" would make any text match.
            if causes.iter().any(|c| !c.field.is_empty()) {
                Refusal::Other
            } else {
                Refusal::Ambiguous
            }
        }
        _ => Refusal::Other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Prepended, Refusal, field_ops, holds, refusal};

    fn apply(object: serde_json::Value, ops: Vec<serde_json::Value>) -> serde_json::Value {
        let mut object = object;
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
        object
    }

    fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_field_write_sets_removes_and_prepends_without_sending_what_is_held() {
        let history =
            |keys: &[u32]| json!(keys.iter().map(|k| json!({"k": k})).collect::<Vec<_>>());
        let stored = json!({"status": {"a": 1, "gone": true, "nested": {"x": 1, "y": 2},
            "history": history(&[5, 4, 3, 2, 1])}});
        // As cached: no history.
        let before = object(json!({"a": 1, "gone": true, "nested": {"x": 1, "y": 2}}));
        let after = object(json!({"a": 2, "nested": {"x": 1}, "new": "n",
            "history": history(&[7, 6])}));
        let p = Prepended {
            field: "history",
            held: 5,
            limit: 6,
        };
        let ops = field_ops(&before, after, p);
        assert!(
            !ops.iter()
                .any(|op| op["value"].to_string().contains("\"k\":1")),
            "a held record was sent back: {ops:?}"
        );
        assert_eq!(
            apply(stored.clone(), ops),
            json!({"status": {"a": 2, "nested": {"x": 1}, "new": "n",
                "history": history(&[7, 6, 5, 4, 3, 2])}})
        );
        // Nothing new: the history is left alone, even past a lowered limit.
        let ops = field_ops(
            &before,
            object(json!({"a": 1, "gone": true, "nested": {"x": 1, "y": 2}})),
            Prepended { limit: 2, ..p },
        );
        assert_eq!(apply(stored.clone(), ops), stored);
        // A lowered limit drops the oldest once something is added.
        let ops = field_ops(
            &before,
            object(json!({"a": 1, "history": history(&[6])})),
            Prepended { limit: 2, ..p },
        );
        assert_eq!(apply(stored, ops)["status"]["history"], history(&[6, 5]));
    }

    #[test]
    fn a_first_record_makes_the_array_and_more_than_the_limit_is_never_written() {
        let stored = json!({"status": {"a": 1}});
        let before = object(json!({"a": 1}));
        let after = object(json!({"a": 1, "history": [{"k": 3}, {"k": 2}, {"k": 1}]}));
        let ops = field_ops(
            &before,
            after,
            Prepended {
                field: "history",
                held: 0,
                limit: 2,
            },
        );
        assert_eq!(
            apply(stored, ops),
            json!({"status": {"a": 1, "history": [{"k": 3}, {"k": 2}]}})
        );
    }
    use kube::core::Status;
    use serde_json::json;

    /// An error as kube-client makes it from the apiserver's Status body.
    fn api_error(code: u16, message: &str, causes: serde_json::Value) -> kube::Error {
        let status: Status = serde_json::from_value(json!({
            "status": "Failure", "code": code, "reason": "Invalid", "message": message,
            "details": {"causes": causes},
        }))
        .unwrap();
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn conflicts_are_preconditions_and_unnamed_422s_need_a_look() {
        let generic = "the server rejected our request due to an error in our request";
        for err in [
            api_error(422, generic, json!([])),
            api_error(
                422,
                generic,
                json!([{"reason": "UnexpectedServerResponse", "message": "test failed"}]),
            ),
        ] {
            assert_eq!(refusal(&err), Refusal::Ambiguous, "{err:?}");
        }
        let conflict = api_error(409, "the object has been modified", json!([]));
        assert_eq!(refusal(&conflict), Refusal::Conflict);
    }

    #[test]
    fn a_guard_holds_when_every_pointer_has_its_value() {
        let object = json!({"metadata": {"resourceVersion": "7"},
            "status": {"nextOccurrence": {"idempotencyKey": "k1"}, "attempts": 0}});
        let key = "/status/nextOccurrence/idempotencyKey";
        assert!(holds(&[(key, json!("k1"))], &object));
        assert!(holds(
            &[(key, json!("k1")), ("/status/attempts", json!(0))],
            &object
        ));
        assert!(!holds(&[(key, json!("k2"))], &object));
        assert!(!holds(&[("/status/attempts", json!(1))], &object));
        assert!(!holds(&[("/status/missing", json!(null))], &object));
        assert!(!holds(
            &[("/metadata/resourceVersion", json!("6"))],
            &object
        ));
    }

    #[test]
    fn schema_rejections_and_other_errors_are_not() {
        let too_many = json!([{"reason": "FieldValueTooMany", "field": "status.history",
            "message": "Too many: 101: must have at most 100 items"}]);
        for err in [
            api_error(422, "RecurringTask.recur.dev \"test\" is invalid", too_many),
            api_error(403, "forbidden", json!([])),
            api_error(404, "not found", json!([])),
            api_error(500, "etcd timeout", json!([])),
        ] {
            assert_eq!(refusal(&err), Refusal::Other, "{err:?}");
        }
    }
}
