//! The OpenAPI 3.1 document of the whole API, kept as YAML beside the code and served as JSON.

use std::sync::OnceLock;

/// The document, parsed once. A malformed document is a build-time mistake caught by the tests.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| serde_yaml::from_str(include_str!("../openapi.yaml")).unwrap_or_default())
}

/// Every (METHOD, path) the document describes.
pub fn operations() -> Vec<(String, String)> {
    let mut ops = Vec::new();
    if let Some(paths) = document()["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch"] {
                if item.get(method).is_some() {
                    ops.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_parses_and_is_openapi_3_1() {
        let doc = super::document();
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
        assert!(!super::operations().is_empty());
    }
}
