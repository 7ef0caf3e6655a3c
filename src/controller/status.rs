//! The one way recur writes status: a JSON patch that first *tests* a precondition and then
//! replaces `/status`. The test makes the write a compare-and-swap on exactly what matters (the
//! pending occurrence's key), so a stale replica or a stale cache can never overwrite newer
//! progress, while edits of labels or annotations by others (which bump resourceVersion) do not
//! conflict with it.
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Error, MANAGER};

/// The precondition of a status write.
#[derive(Clone, Debug)]
pub enum Guard {
    /// `path` (a JSON pointer) must hold `value`.
    Equals { path: &'static str, value: Value },
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
    K: Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let test = match guard {
        Guard::Equals { path, value } => json!({ "op": "test", "path": path, "value": value }),
        Guard::ResourceVersion(rv) => {
            json!({ "op": "test", "path": "/metadata/resourceVersion", "value": rv })
        }
    };
    let ops = json!([test, { "op": "add", "path": "/status", "value": status }]);
    let patch: json_patch::Patch = serde_json::from_value(ops)?;
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    };
    match api
        .patch_status(name, &params, &Patch::Json::<()>(patch))
        .await
    {
        Ok(obj) => Ok(StatusWrite::Written(Box::new(obj))),
        Err(err) if is_precondition_failure(&err) => Ok(StatusWrite::Conflict),
        Err(err) => Err(err.into()),
    }
}

/// A failed `test` operation is answered 422 with a message naming the test; 409 is a plain
/// optimistic-concurrency conflict. Both mean "re-read and decide again".
fn is_precondition_failure(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.code == 409
                || (status.code == 422 && status.message.to_ascii_lowercase().contains("test"))
        }
        _ => false,
    }
}
