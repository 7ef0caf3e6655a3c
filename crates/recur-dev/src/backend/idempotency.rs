//! The backend's `Idempotency-Key` store, as a server following draft-ietf-httpapi-idempotency-
//! key-header keeps it: the first request with a key claims it (in flight) and its response is
//! stored when answered, together with a fingerprint of the request body; later requests with the
//! key are told apart by that state and fingerprint.
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use axum::http::StatusCode;
use serde_json::Value;

/// A stored response, replayed to repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub status: StatusCode,
    pub body: Value,
}

enum Entry {
    InFlight { fingerprint: u64 },
    Done { fingerprint: u64, response: Stored },
}

/// What a request finds under its key.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// First use: the key is now claimed (in flight) until [`Keys::complete`].
    New,
    /// The first request was answered, with the same payload: replay its response.
    Replay(Stored),
    /// The first request is still being processed (409).
    InFlight,
    /// The key was used with a different payload (422).
    Mismatch,
}

/// Per (endpoint, key): the state of the first request with that key.
#[derive(Default)]
pub struct Keys(HashMap<(&'static str, String), Entry>);

impl Keys {
    /// Looks the key up, claiming it when new. A different payload is reported before "in
    /// flight": it is the client's mistake whatever the timing.
    pub fn begin(&mut self, endpoint: &'static str, key: &str, fingerprint: u64) -> Lookup {
        let Some(entry) = self.0.get(&(endpoint, key.to_owned())) else {
            self.0
                .insert((endpoint, key.to_owned()), Entry::InFlight { fingerprint });
            return Lookup::New;
        };
        match entry {
            Entry::InFlight { fingerprint: f } | Entry::Done { fingerprint: f, .. }
                if *f != fingerprint =>
            {
                Lookup::Mismatch
            }
            Entry::InFlight { .. } => Lookup::InFlight,
            Entry::Done { response, .. } => Lookup::Replay(response.clone()),
        }
    }

    /// Stores the answer of the request that claimed the key.
    pub fn complete(&mut self, endpoint: &'static str, key: &str, response: Stored) {
        if let Some(entry) = self.0.get_mut(&(endpoint, key.to_owned()))
            && let Entry::InFlight { fingerprint } = *entry
        {
            *entry = Entry::Done {
                fingerprint,
                response,
            };
        }
    }
}

/// The fingerprint of a request: a hash of its raw body bytes (the same JSON written differently
/// is a different payload, as for any byte-comparing server).
pub fn fingerprint(body: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(body);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_key_goes_from_new_to_in_flight_to_replayed() {
        let mut keys = Keys::default();
        let (a, b) = (fingerprint(b"{\"a\":1}"), fingerprint(b"{\"a\":2}"));
        assert_ne!(a, b);
        assert_eq!(keys.begin("tasks", "k", a), Lookup::New);
        assert_eq!(keys.begin("tasks", "k", a), Lookup::InFlight);
        assert_eq!(keys.begin("tasks", "k", b), Lookup::Mismatch);
        // Endpoints are separate key spaces.
        assert_eq!(keys.begin("notifications", "k", b), Lookup::New);
        let stored = Stored {
            status: StatusCode::CREATED,
            body: json!({"id": "1"}),
        };
        keys.complete("tasks", "k", stored.clone());
        assert_eq!(keys.begin("tasks", "k", a), Lookup::Replay(stored.clone()));
        assert_eq!(keys.begin("tasks", "k", b), Lookup::Mismatch);
        // Completing again (or an unknown key) changes nothing.
        keys.complete(
            "tasks",
            "k",
            Stored {
                status: StatusCode::OK,
                body: json!({}),
            },
        );
        keys.complete("tasks", "other", stored.clone());
        assert_eq!(keys.begin("tasks", "k", a), Lookup::Replay(stored));
        assert_eq!(keys.begin("tasks", "other", a), Lookup::New);
    }
}
