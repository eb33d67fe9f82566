//! Stripe's form encoding: `application/x-www-form-urlencoded` bodies (and GET queries) whose keys carry bracket
//! paths (`metadata[user_id]=u1`, `line_items[0][price]=price_1`, `expand[]=customer`), read into a JSON tree.
//!
//! Indexed (`a[0]`, what async-stripe's serde_qs writes) and unindexed (`a[]`, what curl users and the Node SDK
//! write) arrays both work; an object whose keys are all indexes becomes an array in index order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A form that does not make a tree, e.g. `a=1&a[b]=2`.
#[derive(Debug, thiserror::Error)]
#[error("Invalid form parameter {key:?}: {reason}")]
pub(crate) struct FormError {
    pub key: String,
    pub reason: &'static str,
}

/// One node while parsing: a value, a map of named children, or a list built by `[]` appends.
#[derive(Debug)]
enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
}

/// Parses a form body (or query string) into a JSON object of strings, objects and arrays.
pub(crate) fn parse(raw: &[u8]) -> Result<Value, FormError> {
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(raw) {
        let segments =
            split_key(&key).ok_or_else(|| FormError { key: key.to_string(), reason: "unbalanced brackets" })?;
        insert(&mut root, &segments, value.into_owned())
            .map_err(|reason| FormError { key: key.to_string(), reason })?;
    }
    Ok(to_value(Node::Map(root)))
}

/// `line_items[0][price]` -> `["line_items", "0", "price"]`; `expand[]` -> `["expand", ""]`.
fn split_key(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => return Some(vec![key.to_string()]),
    };
    if head.is_empty() {
        return None;
    }
    let mut out = vec![head.to_string()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        out.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    Some(out)
}

fn insert(map: &mut BTreeMap<String, Node>, segments: &[String], value: String) -> Result<(), &'static str> {
    let (first, rest) = match segments.split_first() {
        Some(split) => split,
        None => return Err("empty key"),
    };
    // `[]` appends: the next free index among the siblings.
    let name = if first.is_empty() { map.len().to_string() } else { first.clone() };
    if rest.is_empty() {
        match map.get(&name) {
            Some(Node::Map(_)) => Err("given both as a value and as an object"),
            _ => {
                map.insert(name, Node::Leaf(value));
                Ok(())
            }
        }
    } else {
        let child = map.entry(name).or_insert_with(|| Node::Map(BTreeMap::new()));
        match child {
            Node::Map(inner) => insert(inner, rest, value),
            Node::Leaf(_) => Err("given both as a value and as an object"),
        }
    }
}

fn to_value(node: Node) -> Value {
    match node {
        Node::Leaf(s) => Value::String(s),
        Node::Map(map) => {
            let indexed: Option<Vec<usize>> = map.keys().map(|k| k.parse::<usize>().ok()).collect();
            match indexed {
                Some(_) if !map.is_empty() => {
                    let mut items: Vec<(usize, Value)> =
                        map.into_iter().filter_map(|(k, v)| k.parse().ok().map(|i| (i, to_value(v)))).collect();
                    items.sort_by_key(|(i, _)| *i);
                    Value::Array(items.into_iter().map(|(_, v)| v).collect())
                }
                _ => Value::Object(map.into_iter().map(|(k, v)| (k, to_value(v))).collect::<Map<String, Value>>()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bracket_keys_make_nested_objects_and_arrays() {
        let form = "mode=subscription&line_items[0][price]=price_1&line_items[0][quantity]=2\
                    &line_items[1][price]=price_2&metadata[user_id]=u%201&expand[]=customer&expand[]=subscription";
        let v = parse(form.as_bytes()).expect("parses");
        assert_eq!(
            v,
            json!({
                "mode": "subscription",
                "line_items": [{"price": "price_1", "quantity": "2"}, {"price": "price_2"}],
                "metadata": {"user_id": "u 1"},
                "expand": ["customer", "subscription"],
            })
        );
    }

    #[test]
    fn percent_encoded_brackets_are_read_like_plain_ones() {
        let v = parse(b"payload%5Bvalue%5D=5&enabled_events%5B0%5D=%2A").expect("parses");
        assert_eq!(v, json!({"payload": {"value": "5"}, "enabled_events": ["*"]}));
    }

    #[test]
    fn a_key_used_both_as_value_and_object_is_refused() {
        assert!(parse(b"a=1&a[b]=2").is_err());
        assert!(parse(b"a[b]=2&a=1").is_err());
        assert!(parse(b"a[b=2").is_err());
    }
}
