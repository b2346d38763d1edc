//! `POST /v1/embeddings` on the pool's embedding models.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::Value;
use slmfn_models::ModelKind;

use super::responses::{EmbeddingList, EmbeddingObject, EmbeddingVector, UsageObject};
use super::wire::EmbeddingRequest;
use super::{GENERATION_TIMEOUT, OpenAiJson, error, invalid, model_error, unsupported};
use crate::inference::{Asker, ChoiceError, ModelError};
use crate::server::AppState;
use crate::server::error::ApiError;

/// `POST /v1/embeddings`: OpenAI's request (`input` a string or a list of strings, `model`,
/// `encoding_format` `float` or `base64`) on an embedding model of the pool; `model` omitted or
/// `"default"` is the runtime's default embedding model. A chat model is 400
/// `model_not_embedding`, an unknown one 404; token-id inputs and a `dimensions` other than the
/// model's are refused (400), never approximated.
pub(in crate::server) async fn embeddings(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingList>, ApiError> {
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
    let model = inference
        .choose(Asker::Api, req.model.as_deref(), ModelKind::Embedding)
        .map_err(|e| {
            let served =
                || served_embedding_models(&inference.models_of_kind(ModelKind::Embedding));
            match e {
                ChoiceError::WrongKind { model, kind, .. } => error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "model {model:?} is not an embedding model (it is a {kind} model); {}",
                        served()
                    ),
                    Some("model_not_embedding"),
                    Some("model"),
                ),
                ChoiceError::NotServed(model) => error(
                    StatusCode::NOT_FOUND,
                    format!("the model {model:?} does not exist; {}", served()),
                    Some("model_not_found"),
                    Some("model"),
                ),
                _ => none_configured(),
            }
        })?;
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
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: if base64 {
                EmbeddingVector::Base64(base64_f32(&vector))
            } else {
                EmbeddingVector::Float(vector)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model,
        usage: UsageObject::embedding(embeddings.prompt_tokens),
    }))
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
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
