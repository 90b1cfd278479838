//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, kept in `openapi.json` beside
//! this file. It is checked against the routes below (each registered path is documented),
//! by `openapi-spec-validator` and by a schema-driven fuzzer against the running server
//! (`tests/integration/openapi.rs`).

use actix_web::http::header;
use actix_web::HttpResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::DOCUMENT;

    /// The paths the HTTP layer registers, read from the source of each `routes` function of
    /// `src/http`: every string literal that starts with '/', with a scope's prefix put before
    /// the `.route(...)`s of its lines. (`/v2` paths come from a list in `v2::routes`; a path
    /// built at run time would escape this, and none is.)
    fn registered() -> BTreeSet<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let Some(routes) = text.find("\npub fn routes(") else {
                continue;
            };
            let body = &text[routes
                ..text[routes..]
                    .find("\n}")
                    .map_or(text.len(), |e| routes + e)];
            let mut scope = String::new();
            for line in body.lines() {
                let mut rest = line;
                while let Some(start) = rest.find("\"/") {
                    let after = &rest[start + 1..];
                    let Some(end) = after.find('"') else { break };
                    let literal = &after[..end];
                    rest = &after[end + 1..];
                    if line.contains("scope(") {
                        scope = literal.to_string();
                    } else if line.contains(".route(\"") {
                        out.insert(format!("{scope}{literal}"));
                    } else {
                        out.insert(literal.to_string());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_registered_path_is_documented_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("the document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let registered = registered();
        assert!(registered.contains("/v2/models/{name}/versions/{version}/infer"));
        assert!(registered.contains("/api/providers/prediction/create"));
        assert_eq!(
            registered.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "registered but not documented"
        );
        assert_eq!(
            documented.difference(&registered).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "documented but not registered"
        );
    }
}
