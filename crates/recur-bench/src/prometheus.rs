//! A parser of the Prometheus/OpenMetrics text format, enough for the apiserver's and recur's
//! `/metrics`.
/// One sample of a Prometheus/OpenMetrics text: name, labels, value.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, Vec<(String, String)>, f64)> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            let (labels, len) = parse_labels(&line[name_end + 1..])?;
            (labels, &line[name_end + 1 + len..])
        } else {
            (vec![], &line[name_end..])
        };
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some((name, labels, value))
    })
}

/// Parses `k="v",k2="v2"}`; returns the labels and the length consumed, closing brace included.
pub fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, usize)> {
    let mut labels = vec![];
    let mut chars = s.char_indices().peekable();
    loop {
        let (i, c) = chars.next()?;
        match c {
            '}' => return Some((labels, i + 1)),
            ',' | ' ' => continue,
            _ => {}
        }
        let mut key = String::from(c);
        loop {
            let (_, c) = chars.next()?;
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
}

pub fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The sum of series `name` whose labels include all of `want`.
pub fn sample_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .filter(|(n, labels, _)| *n == name && want.iter().all(|(k, v)| label(labels, k) == *v))
        .map(|(_, _, v)| v)
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_escapes_and_values_parse() {
        let text = "m{a=\"x\\\"y\",b=\"\"} 4.5\nn 2\n";
        let all: Vec<_> = samples(text).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(label(&all[0].1, "a"), "x\"y");
        assert_eq!(all[0].2, 4.5);
        assert_eq!((all[1].0, all[1].2), ("n", 2.0));
    }
}
