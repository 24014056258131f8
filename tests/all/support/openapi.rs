//! Contract checks against a forge's own published API description.
//!
//! [`OpenApi`] loads GitHub's OpenAPI 3.0 subset or Gitea's Swagger 2 subset from
//! `tests/data/forge-api/`, finds the operation for a method and path, and validates a JSON value
//! against that operation's request body schema or one of its response schemas. `$ref`s to
//! `#/components/...` (OpenAPI 3) and `#/definitions/...`, `#/responses/...`,
//! `#/parameters/...` (Swagger 2) resolve within the document. OpenAPI's `nullable: true` (and
//! Swagger's vendor `x-nullable: true`) are turned into JSON Schema (`type: [t, "null"]`, or
//! `anyOf [schema, null]`) before validating, with draft 4 semantics.
//!
//! [`OpenApi::skeleton`] builds the smallest value a schema accepts (every required field, with
//! a placeholder of the right type), so a test double can answer with schema-valid objects and
//! only fill in the fields that matter.

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One API description, with its validators cached.
pub struct OpenApi {
    name: String,
    doc: Value,
    /// `components` (OpenAPI 3) or `definitions`/`responses`/`parameters` (Swagger 2), already
    /// converted to JSON Schema; embedded next to every schema compiled so refs resolve.
    ref_roots: Map<String, Value>,
    cache: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// An operation found for a concrete request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The path template as written in the document, e.g. `/repos/{owner}/{repo}/pulls`.
    pub template: String,
    /// Path parameters by name.
    pub params: HashMap<String, String>,
}

impl OpenApi {
    /// GitHub's REST API (OpenAPI 3.0.3 subset).
    pub fn github() -> OpenApi {
        OpenApi::load("github-openapi-subset.json")
    }

    /// Gitea's API v1 (Swagger 2 subset).
    pub fn gitea() -> OpenApi {
        OpenApi::load("gitea-swagger-subset.json")
    }

    /// Loads `tests/data/forge-api/<file>` (copied into the repository; origin and licence in
    /// tests/data/README.md), panicking with its path when it is missing or not JSON.
    pub fn load(file: &str) -> OpenApi {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/forge-api")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "API description {} is missing ({e}): the contract tests need it",
                path.display()
            )
        });
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        OpenApi::from_value(file, doc)
    }

    pub fn from_value(name: &str, doc: Value) -> OpenApi {
        let mut ref_roots = Map::new();
        for key in ["components", "definitions", "responses", "parameters"] {
            if let Some(v) = doc.get(key) {
                ref_roots.insert(key.to_string(), to_json_schema(v));
            }
        }
        OpenApi {
            name: name.to_string(),
            doc,
            ref_roots,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The raw document.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Swagger 2's `basePath` (e.g. `/api/v1`), or "" for OpenAPI 3.
    pub fn base_path(&self) -> &str {
        self.doc
            .get("basePath")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_end_matches('/')
    }

    /// The operation `method` `path` calls (query string ignored; Swagger's basePath stripped
    /// when present). Templates with more literal segments win.
    pub fn find_operation(&self, method: &str, path: &str) -> Option<Operation> {
        let method = method.to_ascii_lowercase();
        let path = path.split('?').next().unwrap_or("");
        let base = self.base_path();
        let path = if !base.is_empty() && path.starts_with(base) {
            &path[base.len()..]
        } else {
            path
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut best: Option<(usize, Operation)> = None;
        for (template, ops) in self.doc.get("paths")?.as_object()? {
            if ops.get(&method).is_none() {
                continue;
            }
            let tsegs: Vec<&str> = template.trim_matches('/').split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut params = HashMap::new();
            let mut literals = 0;
            let matched = tsegs.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    params.insert(t[1..t.len() - 1].to_string(), percent_decode(s));
                    !s.is_empty()
                } else {
                    literals += 1;
                    t == s
                }
            });
            if matched && best.as_ref().is_none_or(|(l, _)| literals > *l) {
                best = Some((
                    literals,
                    Operation {
                        template: template.clone(),
                        params,
                    },
                ));
            }
        }
        best.map(|(_, op)| op)
    }

    fn operation(&self, method: &str, template: &str) -> Result<&Value, String> {
        self.doc
            .pointer(&format!(
                "/paths/{}/{}",
                escape_pointer(template),
                method.to_ascii_lowercase()
            ))
            .ok_or_else(|| {
                format!(
                    "{}: no operation {} {template}",
                    self.name,
                    method.to_uppercase()
                )
            })
    }

    /// Follows `$ref`s to a node of the raw document.
    fn deref<'a>(&'a self, mut v: &'a Value) -> Result<&'a Value, String> {
        for _ in 0..32 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let pointer = r
                        .strip_prefix('#')
                        .ok_or_else(|| format!("{}: external $ref {r}", self.name))?;
                    v = self
                        .doc
                        .pointer(pointer)
                        .ok_or_else(|| format!("{}: dangling $ref {r}", self.name))?;
                }
                None => return Ok(v),
            }
        }
        Err(format!("{}: $ref loop", self.name))
    }

    /// The request body schema of an operation (None: it takes no body).
    pub fn request_schema(&self, method: &str, template: &str) -> Result<Option<Value>, String> {
        let op = self.operation(method, template)?;
        if let Some(rb) = op.get("requestBody") {
            let rb = self.deref(rb)?;
            return Ok(json_content_schema(rb));
        }
        // Swagger 2: a parameter `in: body` (on the operation or the path).
        let path_params = self
            .doc
            .pointer(&format!("/paths/{}/parameters", escape_pointer(template)));
        for params in [op.get("parameters"), path_params].into_iter().flatten() {
            for p in params.as_array().into_iter().flatten() {
                let p = self.deref(p)?;
                if p.get("in").and_then(Value::as_str) == Some("body") {
                    return Ok(p.get("schema").cloned());
                }
            }
        }
        Ok(None)
    }

    /// The schema of the `status` response (falling back to `default`). Ok(None): that response
    /// has no body. Err: the status is not documented for the operation.
    pub fn response_schema(
        &self,
        method: &str,
        template: &str,
        status: u16,
    ) -> Result<Option<Value>, String> {
        let op = self.operation(method, template)?;
        let responses = op
            .get("responses")
            .ok_or_else(|| format!("{}: {method} {template} has no responses", self.name))?;
        let resp = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .ok_or_else(|| {
                format!(
                    "{}: status {status} is not documented for {} {template}",
                    self.name,
                    method.to_uppercase()
                )
            })?;
        let resp = self.deref(resp)?;
        if let Some(schema) = resp.get("schema") {
            return Ok(Some(schema.clone()));
        }
        Ok(json_content_schema(resp))
    }

    /// Validates a request body. A body sent to an operation without one must be null.
    pub fn validate_request(
        &self,
        method: &str,
        template: &str,
        body: &Value,
    ) -> Result<(), String> {
        match self.request_schema(method, template)? {
            Some(schema) => self.validate_schema(&schema, body).map_err(|e| {
                format!(
                    "request body of {} {template} violates {}: {e}",
                    method.to_uppercase(),
                    self.name
                )
            }),
            None if body.is_null() => Ok(()),
            None => Err(format!(
                "{} {template} takes no request body in {}, got {body}",
                method.to_uppercase(),
                self.name
            )),
        }
    }

    /// Validates a response body for `status`.
    pub fn validate_response(
        &self,
        method: &str,
        template: &str,
        status: u16,
        body: &Value,
    ) -> Result<(), String> {
        match self.response_schema(method, template, status)? {
            Some(schema) => self.validate_schema(&schema, body).map_err(|e| {
                format!(
                    "{status} response of {} {template} violates {}: {e}",
                    method.to_uppercase(),
                    self.name
                )
            }),
            None if body.is_null() => Ok(()),
            None => Err(format!(
                "{status} response of {} {template} has no body in {}, got {body}",
                method.to_uppercase(),
                self.name
            )),
        }
    }

    /// Validates `value` against a schema of this document (e.g. `{"$ref":
    /// "#/components/schemas/basic-error"}`). Errors are joined, each with its JSON pointer.
    pub fn validate_schema(&self, schema: &Value, value: &Value) -> Result<(), String> {
        let validator = self.validator(schema)?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at '{}'", e, e.instance_path))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        if let Some(v) = self.cache.lock().unwrap().get(&key) {
            return Ok(v.clone());
        }
        let mut root = self.ref_roots.clone();
        root.insert("allOf".into(), json!([to_json_schema(schema)]));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&Value::Object(root))
            .map_err(|e| format!("{}: schema does not compile: {e}", self.name))?;
        let validator = Arc::new(validator);
        self.cache.lock().unwrap().insert(key, validator.clone());
        Ok(validator)
    }

    /// `#/components/schemas/<name>` (OpenAPI 3) or `#/definitions/<name>` (Swagger 2).
    pub fn named_schema(&self, name: &str) -> Value {
        if self.doc.get("components").is_some() {
            json!({ "$ref": format!("#/components/schemas/{name}") })
        } else {
            json!({ "$ref": format!("#/definitions/{name}") })
        }
    }

    /// The smallest value `schema` accepts: required properties only, placeholders of the right
    /// type (first enum value, `null` where nullable, formatted strings for uri/date-time/email).
    pub fn skeleton(&self, schema: &Value) -> Value {
        self.skeleton_at(schema, 0)
    }

    fn skeleton_at(&self, schema: &Value, depth: usize) -> Value {
        if depth > 24 {
            return Value::Null;
        }
        let Ok(schema) = self.deref(schema) else {
            return Value::Null;
        };
        let nullable = schema.get("nullable") == Some(&Value::Bool(true))
            || schema.get("x-nullable") == Some(&Value::Bool(true));
        if nullable {
            return Value::Null;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            let mut out = Value::Null;
            for s in all {
                merge(&mut out, self.skeleton_at(s, depth + 1));
            }
            return out;
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(first) = schema.get(key).and_then(|v| v.as_array()?.first()) {
                return self.skeleton_at(first, depth + 1);
            }
        }
        if let Some(first) = schema.get("enum").and_then(|v| v.as_array()?.first()) {
            return first.clone();
        }
        let ty = match schema.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("null"),
            _ if schema.get("properties").is_some() => "object",
            _ => "object",
        };
        match ty {
            "object" => {
                let mut out = Map::new();
                let required = schema.get("required").and_then(Value::as_array);
                for name in required.into_iter().flatten().filter_map(Value::as_str) {
                    let prop = schema
                        .pointer(&format!("/properties/{}", escape_pointer(name)))
                        .cloned()
                        .unwrap_or(json!({}));
                    out.insert(name.to_string(), self.skeleton_at(&prop, depth + 1));
                }
                Value::Object(out)
            }
            "array" => {
                let n = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
                let item = schema.get("items").cloned().unwrap_or(json!({}));
                Value::Array((0..n).map(|_| self.skeleton_at(&item, depth + 1)).collect())
            }
            "integer" | "number" => json!(schema
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(0)),
            "boolean" => json!(false),
            "null" => Value::Null,
            _ => match schema.get("format").and_then(Value::as_str) {
                Some("date-time") => json!("2025-01-01T00:00:00Z"),
                Some("uri") | Some("url") => json!("https://fake.invalid/"),
                Some("email") => json!("fake@fake.invalid"),
                _ => json!(""),
            },
        }
    }
}

/// Deep merge: objects merge key by key, anything else replaces.
pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `content."application/json".schema` (or the first JSON-ish media type).
fn json_content_schema(node: &Value) -> Option<Value> {
    let content = node.get("content")?.as_object()?;
    let media = content.get("application/json").or_else(|| {
        content
            .iter()
            .find(|(k, _)| k.contains("json"))
            .map(|(_, v)| v)
    })?;
    media.get("schema").cloned()
}

/// OpenAPI 3.0 / Swagger 2 schema → JSON Schema (draft 4): `nullable`/`x-nullable` become
/// `null` in `type` (plain typed schemas) or `anyOf [schema, {type: null}]` (refs, compositions,
/// enums — a `$ref`'s siblings are ignored in draft 4).
pub fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            let mut nullable = false;
            for (k, val) in map {
                match k.as_str() {
                    "nullable" | "x-nullable" if val.is_boolean() => {
                        nullable = val == &Value::Bool(true)
                    }
                    _ => {
                        out.insert(k.clone(), to_json_schema(val));
                    }
                }
            }
            if !nullable {
                return Value::Object(out);
            }
            let simple = !["$ref", "allOf", "anyOf", "oneOf", "enum"]
                .iter()
                .any(|k| out.contains_key(*k));
            match out.get("type").cloned() {
                Some(Value::String(t)) if simple => {
                    out.insert("type".into(), json!([t, "null"]));
                    Value::Object(out)
                }
                _ => json!({ "anyOf": [Value::Object(out), { "type": "null" }] }),
            }
        }
        other => other.clone(),
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
