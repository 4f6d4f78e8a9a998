//! `/contexts`: create, list, remove, restart and interrupt code contexts,
//! and the default context of each language that `/execute` uses when it
//! names none.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use sandlot::code::{CodeContextOptions, Context, ContextInfo, Language};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::envd::users::{self, Accounts};
use crate::envd::{blocking, Target};
use crate::error::ApiError;
use crate::state::SandboxRecord;

/// The id of each language's default context in one sandbox.
#[derive(Default)]
pub struct DefaultContexts(Mutex<BTreeMap<Language, String>>);

/// Bodies here are small JSON objects.
pub(super) const MAX_BODY: usize = 64 << 10;

/// The options of a context the SDK asked for: envd's default user and its
/// home when the sandbox has that account (as commands run), else the
/// template's user; a relative `cwd` starts at that home.
fn options(record: &SandboxRecord, language: Language, cwd: Option<&str>) -> CodeContextOptions {
    let accounts = Accounts::load(&record.sandbox);
    let account = accounts.resolve(None).ok().flatten();
    let home = account
        .as_ref()
        .map_or("/", |a| a.home.as_str())
        .to_string();
    let cwd = match cwd.filter(|c| !c.is_empty()) {
        Some(cwd) => users::absolute(cwd, account.as_ref(), &home),
        None => home,
    };
    let mut options = CodeContextOptions::new(language).cwd(cwd);
    if let Some(account) = account {
        options = options.user(account.name);
    }
    options
}

fn context_json(id: &str, language: Language, cwd: Option<&str>) -> Value {
    json!({ "id": id, "language": language.name(), "cwd": cwd.unwrap_or("/") })
}

/// The default context of `language` in this sandbox, started on first
/// use. Blocking: starting an interpreter takes a while, and concurrent
/// first uses wait for the one start.
pub(super) fn default_context(
    record: &SandboxRecord,
    language: Language,
) -> Result<Context, ApiError> {
    let mut defaults = record.code_defaults.0.lock().unwrap();
    if let Some(id) = defaults.get(&language) {
        if let Ok(context) = record.sandbox.code().get(id) {
            return Ok(context);
        }
    }
    let context = record
        .sandbox
        .code()
        .create_context(options(record, language, None))?;
    defaults.insert(language, context.id.clone());
    Ok(context)
}

/// The context with this id, or the SDK's "not found" (404).
pub(super) fn find(record: &SandboxRecord, id: &str) -> Result<Context, ApiError> {
    record
        .sandbox
        .code()
        .get(id)
        .map_err(|_| ApiError::not_found(format!("Context {id} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContext {
    language: Option<String>,
    cwd: Option<String>,
}

pub(super) async fn create(
    axum::Extension(record): Target,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = crate::control::read_limited(body, MAX_BODY).await?;
    let request: NewContext = crate::control::parse_json(&body)?;
    let language = super::language(request.language.as_deref())?;
    let context = blocking(move || {
        let options = options(&record, language, request.cwd.as_deref());
        Ok(record.sandbox.code().create_context(options)?)
    })
    .await?;
    Ok(Json(context_json(
        &context.id,
        context.language,
        context.cwd.as_deref(),
    )))
}

pub(super) async fn list(axum::Extension(record): Target) -> Json<Value> {
    let contexts: Vec<Value> = record
        .sandbox
        .code()
        .list()
        .iter()
        .map(|c: &ContextInfo| context_json(&c.id, c.language, c.cwd.as_deref()))
        .collect();
    Json(Value::Array(contexts))
}

pub(super) async fn remove(
    axum::Extension(record): Target,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let context = find(&record, &id)?;
        record.sandbox.code().remove(&context)?;
        record
            .code_defaults
            .0
            .lock()
            .unwrap()
            .retain(|_, default| *default != id);
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// A new interpreter for the context: its variables are gone.
pub(super) async fn restart(
    axum::Extension(record): Target,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let context = find(&record, &id)?;
        record.sandbox.code().restart(&context)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Interrupts the context's running cell (SIGINT; killed and restarted if
/// it does not stop within the grace period); nothing for an idle one.
pub(super) async fn interrupt(
    axum::Extension(record): Target,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let context = find(&record, &id)?;
    record.sandbox.code().interrupt(&context)?;
    Ok(StatusCode::NO_CONTENT)
}
