//! `GET /v1/models[/{model}]`: the configured models with their kind and pool state; and
//! `POST /v1/embeddings` on the pool's embedding models.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use slmfn_models::{ModelKind, ModelStatus};

use super::wire::EmbeddingRequest;
use super::{
    GENERATION_TIMEOUT, OpenAiJson, device, error, invalid, model_error, resolve_model, unsupported,
};
use crate::inference::{Inference, ModelError};
use crate::server::AppState;
use crate::server::error::ApiError;

/// Every configured model (an empty list when there are none).
pub(in crate::server) async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = match &state.inference {
        None => Vec::new(),
        Some(inference) => inference
            .pool()
            .status()
            .iter()
            .map(|s| model_json(inference, s))
            .collect(),
    };
    Json(json!({ "object": "list", "data": data }))
}

pub(in crate::server) async fn retrieve(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("the model {model:?} does not exist"),
            Some("model_not_found"),
            Some("model"),
        )
    };
    let inference = state.inference.as_ref().ok_or_else(not_found)?;
    let name = resolve_model(inference, Some(&model))?;
    let status = inference
        .pool()
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(not_found)?;
    Ok(Json(model_json(inference, &status)))
}

/// OpenAI's model object plus the pool's view of it.
fn model_json(inference: &Inference, s: &ModelStatus) -> Value {
    // OpenAI's `created` is when the model was made; the file's time is the nearest we know.
    let created = inference
        .pool()
        .spec(&s.name)
        .ok()
        .and_then(|spec| std::fs::metadata(&spec.path).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({
        "id": s.name,
        "object": "model",
        "created": created,
        "owned_by": "slmfn",
        "kind": s.kind,
        "default": inference.default_model() == Some(s.name.as_str())
            || inference.default_embedding_model() == Some(s.name.as_str()),
        "state": s.state.as_str(),
        "device": device(),
        "memory_bytes": s.memory_bytes,
        "sessions": s.parallel,
        "sessions_busy": s.busy_sessions,
        "queued": s.queued,
    })
}

/// `POST /v1/embeddings`: OpenAI's request (`input` a string or a list of strings, `model`,
/// `encoding_format` `float` or `base64`) on an embedding model of the pool; `model` omitted or
/// `"default"` is the runtime's default embedding model. A chat model is 400
/// `model_not_embedding`, an unknown one 404; token-id inputs and a `dimensions` other than the
/// model's are refused (400), never approximated.
pub(in crate::server) async fn embeddings(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Result<Json<Value>, ApiError> {
    let texts = embedding_inputs(req.input)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\", not {other:?}"),
            ));
        }
    };
    let none_configured = || {
        error(
            StatusCode::NOT_FOUND,
            "no embedding models are configured in this runtime (serve one with \
             --model minilm after `fn models pull minilm`)",
            Some("model_not_found"),
            Some("model"),
        )
    };
    let Some(inference) = state.inference.as_ref() else {
        return Err(match req.model.as_deref() {
            Some(m) if m != "default" => error(
                StatusCode::NOT_FOUND,
                format!(
                    "the model {m:?} does not exist: no embedding models are configured in this runtime"
                ),
                Some("model_not_found"),
                Some("model"),
            ),
            _ => none_configured(),
        });
    };
    let embedding_models = inference.models_of_kind(ModelKind::Embedding);
    let model = match req.model.as_deref() {
        None | Some("default") => inference
            .default_embedding_model()
            .ok_or_else(none_configured)?
            .to_string(),
        Some(m) => match inference.kind(m) {
            Some(ModelKind::Embedding) => m.to_string(),
            Some(kind) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "model {m:?} is not an embedding model (it is a {kind} model); {}",
                        served_embedding_models(&embedding_models)
                    ),
                    Some("model_not_embedding"),
                    Some("model"),
                ));
            }
            None => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "the model {m:?} does not exist; {}",
                        served_embedding_models(&embedding_models)
                    ),
                    Some("model_not_found"),
                    Some("model"),
                ));
            }
        },
    };
    let deadline = std::time::Instant::now() + GENERATION_TIMEOUT;
    let embeddings = inference
        .embed(&model, None, texts, Some(deadline))
        .await
        .map_err(|e| match e {
            ModelError::Cancelled(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the embedding did not start within {} s",
                    GENERATION_TIMEOUT.as_secs()
                ),
                Some("timeout"),
                None,
            ),
            // Input errors name the offending text: point at `input`.
            ModelError::InvalidInput(message) => invalid("input", message),
            e => model_error(e),
        })?;
    if let Some(dimensions) = req.dimensions {
        let own = embeddings.vectors.first().map_or(0, Vec::len);
        if dimensions != own as u64 {
            return Err(unsupported(
                "dimensions",
                format!(
                    "dimensions {dimensions} is not supported: this model's vectors have {own} \
                     dimensions and are returned whole"
                ),
            ));
        }
    }
    let data: Vec<Value> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                Value::String(base64_f32(vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {
            "prompt_tokens": embeddings.prompt_tokens,
            "total_tokens": embeddings.prompt_tokens,
        },
    })))
}

fn served_embedding_models(names: &[String]) -> String {
    if names.is_empty() {
        "no embedding models are configured in this runtime".into()
    } else {
        format!("embedding models: {}", names.join(", "))
    }
}

/// OpenAI's `input`: a string or a non-empty list of strings. Token ids (a list of integers, or
/// of lists of integers) are refused: they would be ids of OpenAI's tokenizer, not the model's.
fn embedding_inputs(input: Option<Value>) -> Result<Vec<String>, ApiError> {
    let not_text = || {
        unsupported(
            "input",
            "token-id inputs are not supported: send the text (a string or a list of strings)",
        )
    };
    match input {
        None | Some(Value::Null) => Err(invalid("input", "input is required")),
        Some(Value::String(text)) => Ok(vec![text]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(invalid("input", "input must not be an empty list"))
        }
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Array(_) => Err(not_text()),
                _ => Err(invalid(
                    "input",
                    "input must be a string or a list of strings",
                )),
            })
            .collect(),
        Some(_) => Err(invalid(
            "input",
            "input must be a string or a list of strings",
        )),
    }
}

/// A vector as OpenAI's `base64` encoding: its little-endian f32 bytes, standard alphabet
/// with padding.
fn base64_f32(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_encoding() {
        // 1.0f32 = 00 00 80 3f; -2.5 = 00 00 20 c0.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.5]), "AACAPwAAIMA=");
        assert_eq!(base64_f32(&[1.0, -2.5, 0.0]), "AACAPwAAIMAAAAAA");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn inputs_are_strings_or_lists_of_strings() {
        assert_eq!(
            embedding_inputs(Some(json!("hi"))).unwrap(),
            vec!["hi".to_string()]
        );
        assert_eq!(
            embedding_inputs(Some(json!(["a", "b"]))).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        for bad in [
            json!(null),
            json!([]),
            json!(3),
            json!([1, 2]),
            json!([[1]]),
            json!([{}]),
        ] {
            assert!(embedding_inputs(Some(bad.clone())).is_err(), "{bad}");
        }
        assert!(embedding_inputs(None).is_err());
    }
}
