//! Argument validation against a tool's input schema, with validators compiled once per
//! schema. No `$ref` outside the schema is resolved: the `jsonschema` crate is built without
//! its HTTP and file resolvers, so a remote reference is an error, never a fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::tools::ToolError;

/// Most validators kept; past it the cache starts over.
const MAX_CACHED: usize = 1024;

/// Compiled validators by tool name, each with the schema it was compiled from (a provider
/// that changes a tool's schema gets a new one).
#[derive(Default)]
pub(crate) struct Validators {
    compiled: Mutex<HashMap<String, (Value, Arc<jsonschema::Validator>)>>,
}

impl Validators {
    /// Checks `arguments` against `schema`; the error lists every violation with its path.
    pub(crate) fn check(
        &self,
        tool: &str,
        schema: &Value,
        arguments: &Value,
    ) -> Result<(), ToolError> {
        let validator = self.validator(tool, schema)?;
        let errors: Vec<String> = validator
            .iter_errors(arguments)
            .take(8)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ToolError::InvalidArguments(format!(
                "arguments of {tool:?} violate its input schema: {}",
                errors.join("; ")
            )))
        }
    }

    fn validator(
        &self,
        tool: &str,
        schema: &Value,
    ) -> Result<Arc<jsonschema::Validator>, ToolError> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, v)) = compiled.get(tool)
            && known == schema
        {
            return Ok(v.clone());
        }
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            ToolError::Failed(format!("the input schema of {tool:?} is unusable: {e}"))
        })?;
        if compiled.len() >= MAX_CACHED {
            compiled.clear();
        }
        let validator = Arc::new(validator);
        compiled.insert(tool.to_string(), (schema.clone(), validator.clone()));
        Ok(validator)
    }
}

/// Whether `schema` is a JSON Schema the validator accepts (and needs nothing remote).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn violations_are_named_and_remote_refs_are_not_fetched() {
        let validators = Validators::default();
        let schema = json!({
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
        });
        validators
            .check("t.get", &schema, &json!({"id": 4412}))
            .unwrap();
        let err = validators
            .check("t.get", &schema, &json!({"id": "x"}))
            .unwrap_err();
        assert!(
            matches!(&err, ToolError::InvalidArguments(m) if m.contains("/id")),
            "{err:?}"
        );
        let err = validators.check("t.get", &schema, &json!({})).unwrap_err();
        assert!(matches!(&err, ToolError::InvalidArguments(m) if m.contains("id")));
        let remote = json!({"$ref": "http://127.0.0.1:9/schema.json"});
        let err = validators
            .check("t.remote", &remote, &json!({}))
            .unwrap_err();
        assert!(matches!(err, ToolError::Failed(_)), "{err:?}");
    }
}
