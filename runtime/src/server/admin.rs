//! `/admin/...`: deploy, list, get, delete, rollback, revisions. Protected by
//! [`super::auth::admin`].

use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::registry::{FunctionRecord, RevisionRecord};

/// With `--functions DIR` the image's functions are the truth: no deploys, rollbacks or deletes.
fn writable(state: &AppState) -> Result<(), ApiError> {
    match &state.config.functions_dir {
        None => Ok(()),
        Some(dir) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this runtime serves the read-only functions dir {} (--functions): change functions by building a new image or Knative revision",
                dir.display()
            ),
        )),
    }
}

pub(super) async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut multipart: Multipart,
) -> Result<impl IntoResponse, ApiError> {
    writable(&state)?;
    crate::manifest::validate_name(&name)?;
    let (mut manifest, mut component) = (None, None);
    let part_error = |e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "upload exceeds the limit of {} bytes",
                state.config.max_upload_bytes
            )
        } else {
            format!("invalid multipart upload: {}", e.body_text())
        };
        ApiError::new(status, message)
    };
    let parts = async {
        while let Some(field) = multipart.next_field().await.map_err(part_error)? {
            match field.name() {
                Some("manifest") => manifest = Some(field.text().await.map_err(part_error)?),
                Some("component") => component = Some(field.bytes().await.map_err(part_error)?),
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "unexpected multipart part {other:?}: send `manifest` and `component`"
                        ),
                    ));
                }
            }
        }
        Ok(())
    };
    let timeout = state.config.body_timeout();
    tokio::time::timeout(timeout, parts)
        .await
        .map_err(|_| super::body::BodyError::Timeout(timeout))??;
    let manifest = manifest.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing multipart part `manifest` (the fn.toml text)",
        )
    })?;
    let component = component.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing multipart part `component` (the .wasm bytes)",
        )
    })?;
    if component.len() > state.config.max_upload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "component of {} bytes exceeds the limit of {} bytes",
                component.len(),
                state.config.max_upload_bytes
            ),
        ));
    }
    let record = state.host.deploy(&name, &manifest, &component).await?;
    Ok((StatusCode::CREATED, Json(revision_json(&record))))
}

pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let registry = state.host.registry();
    let functions = registry
        .list_functions()?
        .iter()
        .map(|f| Ok(function_json(f, &registry.revision(&f.name, f.current)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({ "functions": functions })))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let registry = state.host.registry();
    let f = registry.function(&name)?;
    Ok(Json(function_json(
        &f,
        &registry.revision(&name, f.current)?,
    )))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writable(&state)?;
    state.host.delete(&name).await?;
    Ok(Json(json!({ "deleted": name })))
}

pub(super) async fn revisions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revisions: Vec<Value> = state
        .host
        .registry()
        .revisions(&name)?
        .iter()
        .map(revision_json)
        .collect();
    Ok(Json(json!({ "revisions": revisions })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    revision: Option<String>,
}

pub(super) async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    writable(&state)?;
    let (parts, body) = req.into_parts();
    let timeout = state.config.body_timeout();
    let body = super::body::read(&parts.headers, body, super::ADMIN_BODY_LIMIT, timeout).await?;
    let body: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("rollback body must be {{\"revision\": \"<uuid>\"}}: {e}"),
            )
        })?
    };
    let revision = body
        .revision
        .map(|r| {
            Uuid::parse_str(&r).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("revision {r:?} is not a uuid: {e}"),
                )
            })
        })
        .transpose()?;
    let record = state.host.rollback(&name, revision).await?;
    Ok(Json(revision_json(&record)))
}

fn revision_json(r: &RevisionRecord) -> Value {
    json!({
        "function": r.function,
        "revision": r.revision,
        "created_at": r.created_at,
        "component_sha256": r.component_sha256,
        "component_size": r.component_size,
        "manifest": r.manifest,
    })
}

fn function_json(f: &FunctionRecord, current: &RevisionRecord) -> Value {
    json!({
        "name": f.name,
        "current_revision": f.current,
        "revisions": f.revisions.len(),
        "updated_at": f.updated_at,
        "manifest": current.manifest,
    })
}

/// `GET /admin/quarantine`: registry records that did not decode at open, set aside.
pub(super) async fn quarantine(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let records = state.host.registry().quarantined()?;
    Ok(Json(json!({ "records": records })))
}
