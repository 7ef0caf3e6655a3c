//! A process environment for unit tests of code that reads variables through a lookup
//! function, so tests never touch (or race on) the real one.
use std::collections::HashMap;

/// A lookup over `pairs`.
pub fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}
