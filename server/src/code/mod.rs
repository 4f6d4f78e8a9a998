//! The code interpreter's API (port 49999 of a sandbox, in the same
//! routing as envd): `POST /execute` answers NDJSON as the code-interpreter
//! SDKs parse it, and `/contexts` manages stateful interpreters. Backed by
//! the library's code contexts (`sandbox.code()`).
//!
//! Contexts run as envd's default user (`user`, cwd `/home/user`) when the
//! sandbox has that account, like commands; the default context of each
//! language (what `run_code` without a context uses) is made on first use
//! and remembered in the sandbox's record.

mod contexts;
mod execute;
mod ndjson;

use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use sandlot::code::Language;

use crate::error::ApiError;

pub use contexts::DefaultContexts;

pub fn router() -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute::execute))
        .route("/contexts", post(contexts::create).get(contexts::list))
        .route("/contexts/{id}", delete(contexts::remove))
        .route("/contexts/{id}/restart", post(contexts::restart))
        .route("/contexts/{id}/interrupt", post(contexts::interrupt))
        .fallback(no_route)
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no code interpreter route {method} {}", uri.path()))
}

/// A language name as the SDKs send it (`python`, `js`, `javascript`,
/// `bash`, …); `None` is Python, the reference's default. Languages the
/// reference runs and sandlot has no driver for (TypeScript, R, Java,
/// Deno) are refused by name.
pub fn language(name: Option<&str>) -> Result<Language, ApiError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(Language::Python);
    };
    name.parse::<Language>().map_err(|_| {
        ApiError::bad_request(format!(
            "language {name:?} is not available in sandlot (python, javascript and bash are)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_as_the_sdks_name_them() {
        assert_eq!(language(None).unwrap(), Language::Python);
        assert_eq!(language(Some("")).unwrap(), Language::Python);
        assert_eq!(language(Some("js")).unwrap(), Language::JavaScript);
        assert_eq!(language(Some("JavaScript")).unwrap(), Language::JavaScript);
        assert_eq!(language(Some("bash")).unwrap(), Language::Bash);
        let e = language(Some("r")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("\"r\""));
        assert!(language(Some("typescript")).is_err());
    }
}
