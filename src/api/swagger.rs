//! `<base>/swagger.json`: the Swagger 2.0 document of exactly what this server serves.
//!
//! The document is `swagger.json` beside this file, compiled in, so it is reviewed as JSON and
//! changes with the code in the same commit. Unlike the hosted service's, it declares the two
//! headers as `apiKey` security schemes, so a client generated from it sends them. Its
//! `basePath` is the base it was asked under; both variants are made once and shared. The
//! integration tests check that every path it lists answers, and every method answered is in it.
//! Its gzip forms are made once too, on first use, at the load level (it never changes).

use std::sync::{Arc, OnceLock};

use super::BASES;
use crate::gzip;
use crate::http::encoding::{self, Coding};
use crate::http::{Response, Status};

const DOCUMENT: &str = include_str!("swagger.json");
/// The `basePath` line as written in the file, which names `BASES[0]`.
const BASE_PATH_LINE: &str = "\"basePath\": \"/ArchitectureDashboardAPI/rest/V1\"";

/// The document and its gzip member.
type Forms = (Arc<[u8]>, Arc<[u8]>);

/// Per base in [`BASES`].
static BODIES: OnceLock<[Forms; 2]> = OnceLock::new();

/// The document for the base at `base` in [`BASES`], in `coding` if it is worth it.
pub fn response(base: usize, coding: Coding) -> Response {
    let bodies = BODIES.get_or_init(|| {
        BASES.map(|b| {
            let plain = document(b).into_bytes();
            let member = gzip::compress(&plain, gzip::LOAD_LEVEL);
            (Arc::from(plain), Arc::from(member))
        })
    });
    let (plain, member) = bodies.get(base).unwrap_or(&bodies[0]);
    match coding.for_body(plain.len()) {
        Coding::Gzip => encoding::gzipped(Response::shared_json(Status::OK, Arc::clone(member))),
        Coding::Identity => Response::shared_json(Status::OK, Arc::clone(plain)),
    }
}

fn document(base: &str) -> String {
    DOCUMENT.replacen(BASE_PATH_LINE, &format!("\"basePath\": \"{base}\""), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_base_gets_its_own_base_path() {
        for base in BASES {
            let doc: serde_json::Value = serde_json::from_str(&document(base)).unwrap();
            assert_eq!(doc["basePath"], base);
            assert_eq!(doc["swagger"], "2.0");
            let schemes = &doc["securityDefinitions"];
            assert_eq!(schemes["ApiKey"]["name"], "x-api-key");
            assert_eq!(schemes["ActivationCode"]["name"], "x-activation-code");
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20);
        for reference in refs {
            let pointer = reference.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "dangling {reference}");
        }
    }

    fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value.as_str()) {
                        ("$ref", Some(reference)) => out.push(reference.to_owned()),
                        _ => collect_refs(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
