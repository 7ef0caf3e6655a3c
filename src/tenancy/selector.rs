//! Label selectors (`matchLabels`, `matchExpressions`) evaluated against a namespace's labels,
//! with Kubernetes' semantics.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`; `Err` names what is malformed (an unknown
/// operator, values where none belong or none where some must be). An empty selector selects
/// everything.
pub(crate) fn selects(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut selected = true;
    for (key, value) in selector.match_labels.iter().flatten() {
        selected &= labels.get(key) == Some(value);
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let here = |why: &str| {
            Err(format!(
                "namespaceSelector.matchExpressions[{i}]: operator {:?} {why}",
                expr.operator
            ))
        };
        let has = labels.get(&expr.key);
        let matched = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return here("needs values"),
            "Exists" | "DoesNotExist" if !values.is_empty() => return here("takes no values"),
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => !has.is_some_and(|v| values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            _ => return here("is not In, NotIn, Exists or DoesNotExist"),
        };
        selected &= matched;
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selects_all_and_match_labels_must_all_hold() {
        let ns = labels(&[("team", "a"), ("env", "prod")]);
        assert!(selects(&LabelSelector::default(), &ns).unwrap());
        let sel = LabelSelector {
            match_labels: Some(labels(&[("team", "a")])),
            ..Default::default()
        };
        assert!(selects(&sel, &ns).unwrap());
        let sel = LabelSelector {
            match_labels: Some(labels(&[("team", "a"), ("env", "dev")])),
            ..Default::default()
        };
        assert!(!selects(&sel, &ns).unwrap());
    }

    #[test]
    fn expressions_follow_kubernetes_semantics() {
        let ns = labels(&[("team", "a")]);
        let one = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(selects(&one(expr("team", "In", &["a", "b"])), &ns).unwrap());
        assert!(!selects(&one(expr("team", "NotIn", &["a"])), &ns).unwrap());
        // NotIn selects objects without the label.
        assert!(selects(&one(expr("tier", "NotIn", &["x"])), &ns).unwrap());
        assert!(selects(&one(expr("team", "Exists", &[])), &ns).unwrap());
        assert!(selects(&one(expr("tier", "DoesNotExist", &[])), &ns).unwrap());
        let err = selects(&one(expr("team", "Equals", &["a"])), &ns).unwrap_err();
        assert!(err.contains("matchExpressions[0]"), "{err}");
        assert!(selects(&one(expr("team", "In", &[])), &ns).is_err());
        assert!(selects(&one(expr("team", "Exists", &["a"])), &ns).is_err());
    }
}
