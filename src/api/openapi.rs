//! The OpenAPI 3.1 document of the `/v1` API (hand-written, embedded in the
//! binary, served at `GET /v1/openapi.json`) and a validator for the part
//! of JSON Schema it uses, so that tests can hold every response to it.
//!
//! The validator knows `$ref` (local), `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `oneOf`, `minimum`,
//! `maximum`, `minItems` and `maxItems`, and treats `description`, `title`,
//! `format`, `examples` and `default` as annotations. Any other keyword is
//! an error rather than silently ignored: a schema can never promise more
//! than is checked.

use std::sync::OnceLock;

use serde_json::Value;

/// The document as embedded.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The parsed document.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(DOCUMENT).expect("the embedded OpenAPI document is JSON (unit-tested)")
    })
}

const ANNOTATIONS: &[&str] = &["description", "title", "format", "examples", "default"];
const MAX_DEPTH: usize = 64;

/// Check `instance` against `schema`, resolving `$ref`s in `root`. Returns
/// every violation, each as `<instance path>: <what>`.
pub fn validate(root: &Value, schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(root, schema, instance, "$", 0, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn type_matches(t: &str, v: &Value) -> Result<bool, String> {
    Ok(match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => return Err(format!("schema: unknown type {other:?}")),
    })
}

fn check(
    root: &Value,
    schema: &Value,
    v: &Value,
    at: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    if depth > MAX_DEPTH {
        errors.push(format!(
            "{at}: schema: $ref nesting deeper than {MAX_DEPTH}"
        ));
        return;
    }
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            errors.push(format!("{at}: no value is allowed here"));
            return;
        }
        Value::Object(m) => m,
        _ => {
            errors.push(format!("{at}: schema: a schema is an object or a boolean"));
            return;
        }
    };
    for (k, sv) in schema {
        match k.as_str() {
            "$ref" => {
                let target = sv
                    .as_str()
                    .and_then(|r| r.strip_prefix('#'))
                    .and_then(|p| root.pointer(p));
                match target {
                    Some(t) => check(root, t, v, at, depth + 1, errors),
                    None => errors.push(format!("{at}: schema: unresolvable $ref {sv}")),
                }
            }
            "type" => {
                let types: Vec<&str> = match sv {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => {
                        errors.push(format!("{at}: schema: `type` is a string or an array"));
                        continue;
                    }
                };
                let mut ok = false;
                for t in &types {
                    match type_matches(t, v) {
                        Ok(m) => ok |= m,
                        Err(e) => errors.push(format!("{at}: {e}")),
                    }
                }
                if !ok {
                    errors.push(format!(
                        "{at}: expected {}, found {}",
                        types.join(" or "),
                        kind(v)
                    ));
                }
            }
            "properties" => {
                let (Some(props), Some(obj)) = (sv.as_object(), v.as_object()) else {
                    continue;
                };
                for (name, ps) in props {
                    if let Some(pv) = obj.get(name) {
                        check(root, ps, pv, &format!("{at}.{name}"), depth + 1, errors);
                    }
                }
            }
            "required" => {
                let Some(obj) = v.as_object() else { continue };
                for name in sv
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !obj.contains_key(name) {
                        errors.push(format!("{at}: missing required member `{name}`"));
                    }
                }
            }
            "additionalProperties" => {
                let Some(obj) = v.as_object() else { continue };
                let declared = schema.get("properties").and_then(Value::as_object);
                for (name, pv) in obj {
                    if declared.is_some_and(|d| d.contains_key(name)) {
                        continue;
                    }
                    if sv == &Value::Bool(false) {
                        errors.push(format!("{at}: member `{name}` is not allowed"));
                    } else {
                        check(root, sv, pv, &format!("{at}.{name}"), depth + 1, errors);
                    }
                }
            }
            "items" => {
                let Some(items) = v.as_array() else { continue };
                for (i, item) in items.iter().enumerate() {
                    check(root, sv, item, &format!("{at}[{i}]"), depth + 1, errors);
                }
            }
            "enum" => {
                if !sv.as_array().is_some_and(|opts| opts.contains(v)) {
                    errors.push(format!("{at}: {v} is not one of {sv}"));
                }
            }
            "const" => {
                if sv != v {
                    errors.push(format!("{at}: {v} is not {sv}"));
                }
            }
            "oneOf" => {
                let Some(options) = sv.as_array() else {
                    errors.push(format!("{at}: schema: `oneOf` is an array"));
                    continue;
                };
                let matching = options
                    .iter()
                    .filter(|o| {
                        let mut e = Vec::new();
                        check(root, o, v, at, depth + 1, &mut e);
                        e.is_empty()
                    })
                    .count();
                if matching != 1 {
                    errors.push(format!(
                        "{at}: matches {matching} of the `oneOf` alternatives, not exactly one"
                    ));
                }
            }
            "minimum" | "maximum" => {
                let (Some(bound), Some(n)) = (sv.as_f64(), v.as_f64()) else {
                    continue;
                };
                if (k == "minimum" && n < bound) || (k == "maximum" && n > bound) {
                    errors.push(format!("{at}: {n} is outside the {k} {bound}"));
                }
            }
            "minItems" | "maxItems" => {
                let (Some(bound), Some(items)) = (sv.as_u64(), v.as_array()) else {
                    continue;
                };
                let n = items.len() as u64;
                if (k == "minItems" && n < bound) || (k == "maxItems" && n > bound) {
                    errors.push(format!("{at}: {n} items is outside the {k} {bound}"));
                }
            }
            a if ANNOTATIONS.contains(&a) => {}
            other => errors.push(format!(
                "{at}: schema: keyword `{other}` is not supported by this validator"
            )),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Follow a `$ref` in `doc` (responses and request bodies may be refs).
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    for _ in 0..MAX_DEPTH {
        match v
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| doc.pointer(p))
        {
            Some(t) => v = t,
            None => break,
        }
    }
    v
}

/// The path template of `doc` matching a concrete request path: literal
/// segments must be equal, `{name}` segments match any one segment; the
/// template with the most literal segments wins.
pub fn path_template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let segs: Vec<&str> = path.split('/').collect();
    doc.get("paths")?
        .as_object()?
        .keys()
        .filter_map(|t| {
            let tsegs: Vec<&str> = t.split('/').collect();
            if tsegs.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (ts, s) in tsegs.iter().zip(&segs) {
                if ts.starts_with('{') && ts.ends_with('}') {
                    if s.is_empty() {
                        return None;
                    }
                } else if ts == s {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, t.as_str()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, t)| t)
}

/// Check one response against `doc`: the status must be declared for the
/// operation (for a path or method no operation has, in the top-level
/// `x-unmatched-responses`), its content type declared, and a JSON body
/// valid against the declared schema.
pub fn check_response(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let op =
        path_template(doc, path).and_then(|t| doc["paths"][t].get(method.to_ascii_lowercase()));
    let responses = match op {
        Some(op) => &op["responses"],
        None => &doc["x-unmatched-responses"]["responses"],
    };
    let what = format!("{method} {path} → {status}");
    let response = responses
        .get(status.to_string())
        .map(|r| deref(doc, r))
        .ok_or_else(|| format!("{what}: status not declared for this operation"))?;
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return if body.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: a body where none is declared"))
        };
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    let declared = content
        .get(media)
        .ok_or_else(|| format!("{what}: content type {media:?} not declared"))?;
    let schema = declared.get("schema").unwrap_or(&Value::Bool(true));
    if !media.starts_with("text/") && media != "application/json" {
        // A binary body (an export's Arrow or Parquet): the document can
        // only declare it as such; its content is checked by decoding it.
        let binary = schema.get("type") == Some(&Value::from("string"))
            && schema.get("format") == Some(&Value::from("binary"));
        return if binary {
            Ok(())
        } else {
            Err(format!(
                "{what}: {media} is a binary body, declared as something else"
            ))
        };
    }
    let instance = if media == "application/json" {
        serde_json::from_slice(body).map_err(|e| format!("{what}: body is not JSON: {e}"))?
    } else {
        Value::String(
            String::from_utf8(body.to_vec())
                .map_err(|_| format!("{what}: text body is not UTF-8"))?,
        )
    };
    validate(doc, schema, &instance).map_err(|errors| format!("{what}: {}", errors.join("; ")))
}

/// Check a response's headers against `doc`: every header the response
/// declares `required` is present, and one declared as an integer holds
/// one. (Content type and body: [`check_response`].)
pub fn check_response_headers(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    headers: &hyper::HeaderMap,
) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let op =
        path_template(doc, path).and_then(|t| doc["paths"][t].get(method.to_ascii_lowercase()));
    let responses = match op {
        Some(op) => &op["responses"],
        None => &doc["x-unmatched-responses"]["responses"],
    };
    let Some(response) = responses.get(status.to_string()).map(|r| deref(doc, r)) else {
        return Ok(()); // an undeclared status is check_response's to report
    };
    let mut errors = Vec::new();
    for (name, h) in response["headers"].as_object().into_iter().flatten() {
        let value = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        match value {
            None if h["required"] == Value::Bool(true) => {
                errors.push(format!("header `{name}` is required"))
            }
            Some(v) if h["schema"]["type"] == "integer" && v.parse::<u64>().is_err() => {
                errors.push(format!("header `{name}`: {v:?} is not an integer"))
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{method} {path} → {status}: {}", errors.join("; ")))
    }
}

/// Every schema in `doc` (component schemas, request bodies, responses):
/// each must use only what [`validate`] checks, and every `$ref` must
/// resolve. Used by the tests of the embedded document.
pub fn lint(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut schemas: Vec<(String, &Value)> = Vec::new();
    if let Some(s) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        schemas.extend(
            s.iter()
                .map(|(k, v)| (format!("components.schemas.{k}"), v)),
        );
    }
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            if let Some(s) = op.pointer("/requestBody/content/application~1json/schema") {
                schemas.push((format!("{method} {path} request"), s));
            }
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                let r = deref(doc, r);
                if r.get("description").is_none() {
                    problems.push(format!(
                        "{method} {path} {status}: response without description"
                    ));
                }
                for (media, c) in r["content"].as_object().into_iter().flatten() {
                    schemas.push((format!("{method} {path} {status} {media}"), &c["schema"]));
                }
            }
        }
    }
    for (name, schema) in schemas {
        // Validating `null` walks every keyword the instance reaches;
        // walk the keywords themselves instead.
        lint_schema(doc, schema, &name, 0, &mut problems);
    }
    problems
}

fn lint_schema(doc: &Value, schema: &Value, at: &str, depth: usize, problems: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(m) = schema.as_object() else {
        if !schema.is_boolean() {
            problems.push(format!("{at}: a schema is an object or a boolean"));
        }
        return;
    };
    for (k, v) in m {
        match k.as_str() {
            "$ref" => {
                if v.as_str()
                    .and_then(|r| r.strip_prefix('#'))
                    .and_then(|p| doc.pointer(p))
                    .is_none()
                {
                    problems.push(format!("{at}: unresolvable $ref {v}"));
                }
            }
            "properties" => {
                for (p, s) in v.as_object().into_iter().flatten() {
                    lint_schema(doc, s, &format!("{at}.{p}"), depth + 1, problems);
                }
            }
            "additionalProperties" | "items" => {
                lint_schema(doc, v, &format!("{at}.{k}"), depth + 1, problems)
            }
            "oneOf" => {
                for (i, s) in v.as_array().into_iter().flatten().enumerate() {
                    lint_schema(doc, s, &format!("{at}.oneOf[{i}]"), depth + 1, problems);
                }
            }
            "required" => {
                let declared = m.get("properties").and_then(Value::as_object);
                for r in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if declared.is_some_and(|d| !d.contains_key(r)) {
                        problems.push(format!("{at}: required `{r}` is not a declared property"));
                    }
                }
            }
            "type" | "enum" | "const" | "minimum" | "maximum" | "minItems" | "maxItems" => {}
            a if ANNOTATIONS.contains(&a) => {}
            other => problems.push(format!("{at}: keyword `{other}` is not supported")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn root() -> Value {
        json!({
            "components": { "schemas": {
                "Thing": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer", "minimum": 0 },
                        "name": { "type": ["string", "null"] },
                        "kind": { "type": "string", "enum": ["a", "b"] },
                        "tags": { "type": "array", "items": { "type": "string" }, "maxItems": 2 },
                        "child": { "$ref": "#/components/schemas/Thing" }
                    },
                    "required": ["id", "kind"],
                    "additionalProperties": false
                },
                "Map": { "type": "object", "additionalProperties": { "type": "integer" } },
                "Subject": { "oneOf": [
                    { "type": "object", "properties": { "a": { "type": "string" } }, "required": ["a"], "additionalProperties": false },
                    { "type": "object", "properties": { "b": { "type": "string" } }, "required": ["b"], "additionalProperties": false }
                ] }
            } }
        })
    }

    fn thing() -> Value {
        json!({ "$ref": "#/components/schemas/Thing" })
    }

    #[test]
    fn valid_instances_pass() {
        let r = root();
        for v in [
            json!({ "id": 1, "kind": "a" }),
            json!({ "id": 0, "kind": "b", "name": null, "tags": ["x", "y"] }),
            json!({ "id": 2, "kind": "a", "name": "n", "child": { "id": 3, "kind": "b" } }),
            json!({ "id": 2.0, "kind": "a" }),
        ] {
            assert_eq!(validate(&r, &thing(), &v), Ok(()), "{v}");
        }
        let map = json!({ "$ref": "#/components/schemas/Map" });
        assert_eq!(validate(&r, &map, &json!({ "x": 1, "y": 2 })), Ok(()));
        let subject = json!({ "$ref": "#/components/schemas/Subject" });
        assert_eq!(validate(&r, &subject, &json!({ "a": "1" })), Ok(()));
        assert_eq!(validate(&r, &subject, &json!({ "b": "1" })), Ok(()));
    }

    #[test]
    fn each_keyword_rejects_what_it_forbids() {
        let r = root();
        let cases: Vec<(Value, &str)> = vec![
            (json!({ "kind": "a" }), "missing required member `id`"),
            (json!({ "id": 1 }), "missing required member `kind`"),
            (
                json!({ "id": "1", "kind": "a" }),
                "$.id: expected integer, found string",
            ),
            (
                json!({ "id": 1.5, "kind": "a" }),
                "$.id: expected integer, found number",
            ),
            (
                json!({ "id": -1, "kind": "a" }),
                "$.id: -1 is outside the minimum 0",
            ),
            (
                json!({ "id": 1, "kind": "c" }),
                "$.kind: \"c\" is not one of",
            ),
            (
                json!({ "id": 1, "kind": "a", "name": 3 }),
                "$.name: expected string or null",
            ),
            (
                json!({ "id": 1, "kind": "a", "extra": 1 }),
                "member `extra` is not allowed",
            ),
            (
                json!({ "id": 1, "kind": "a", "tags": [1] }),
                "$.tags[0]: expected string",
            ),
            (
                json!({ "id": 1, "kind": "a", "tags": ["a", "b", "c"] }),
                "3 items is outside the maxItems 2",
            ),
            (
                json!({ "id": 1, "kind": "a", "child": { "id": 1 } }),
                "$.child: missing required member `kind`",
            ),
            (json!([1]), "$: expected object, found array"),
            (json!(null), "$: expected object, found null"),
        ];
        for (v, want) in cases {
            let errors = validate(&r, &thing(), &v).expect_err(&v.to_string());
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{v}: {errors:?} lacks {want}"
            );
        }
        let map = json!({ "$ref": "#/components/schemas/Map" });
        assert!(validate(&r, &map, &json!({ "x": "1" })).is_err());
        let subject = json!({ "$ref": "#/components/schemas/Subject" });
        assert!(validate(&r, &subject, &json!({ "a": "1", "b": "2" })).is_err());
        assert!(validate(&r, &subject, &json!({})).is_err());
        assert!(validate(&r, &json!({ "const": 1 }), &json!(2)).is_err());
        assert!(validate(&r, &json!(false), &json!(2)).is_err());
    }

    #[test]
    fn unknown_keywords_and_bad_refs_are_errors_not_passes() {
        let r = root();
        let e = validate(&r, &json!({ "pattern": "^a$" }), &json!("b")).unwrap_err();
        assert!(e[0].contains("keyword `pattern` is not supported"), "{e:?}");
        let e = validate(
            &r,
            &json!({ "$ref": "#/components/schemas/Nope" }),
            &json!(1),
        )
        .unwrap_err();
        assert!(e[0].contains("unresolvable $ref"), "{e:?}");
        let e = validate(&r, &json!({ "type": "int" }), &json!(1)).unwrap_err();
        assert!(e[0].contains("unknown type"), "{e:?}");
        let problems = lint(&json!({
            "paths": { "/x": { "get": { "responses": { "200": { "description": "d", "content": { "application/json": { "schema": {
                "type": "object", "properties": { "a": { "$ref": "#/nope" } }, "required": ["a", "b"], "anyOf": []
            } } } } } } } }
        }));
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn the_embedded_document_is_valid_and_self_consistent() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(lint(doc), Vec::<String>::new());
        // Every operation declares the error shape for what every audited
        // route can answer, and the error shape is strict.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let operations_route = op.get("security").is_some();
                for status in ["401", "403", "429"] {
                    assert_eq!(
                        op["responses"].get(status).is_some(),
                        !operations_route,
                        "{method} {path} {status}"
                    );
                }
                if !operations_route {
                    assert!(op["responses"].get("503").is_some(), "{method} {path} 503");
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "408", "413", "422"] {
                        assert!(
                            op["responses"].get(status).is_some(),
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        let e = json!({ "error": { "code": "x", "message": "y" }, "audit_entry": 3 });
        assert!(
            check_response(
                doc,
                "GET",
                "/v1/cases",
                403,
                "application/json",
                e.to_string().as_bytes()
            )
            .is_ok()
        );
        let leaky = json!({ "error": { "code": "x", "message": "y", "backtrace": "…" } });
        assert!(
            check_response(
                doc,
                "GET",
                "/v1/cases",
                403,
                "application/json",
                leaky.to_string().as_bytes()
            )
            .is_err()
        );
        // A status the operation does not declare is an error.
        assert!(
            check_response(
                doc,
                "GET",
                "/v1/cases",
                413,
                "application/json",
                e.to_string().as_bytes()
            )
            .is_err()
        );
        assert!(
            check_response(
                doc,
                "GET",
                "/v1/health",
                200,
                "application/json",
                br#"{"status":"ok"}"#
            )
            .is_ok()
        );
        assert!(
            check_response(
                doc,
                "GET",
                "/v1/health",
                200,
                "text/html",
                br#"{"status":"ok"}"#
            )
            .is_err()
        );
        assert!(
            check_response(
                doc,
                "GET",
                "/v1/metrics",
                200,
                "text/plain; version=0.0.4",
                b"x 1\n"
            )
            .is_ok()
        );
        assert!(
            check_response(
                doc,
                "DELETE",
                "/v1/cases",
                405,
                "application/json",
                e.to_string().as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn binary_bodies_and_declared_headers_are_checked() {
        let doc = document();
        let path = "/v1/exports/population";
        let arrow = "application/vnd.apache.arrow.stream";
        assert!(check_response(doc, "GET", path, 200, arrow, &[0xff, 0xff, 0, 1]).is_ok());
        assert!(check_response(doc, "GET", path, 200, "application/x-ndjson", b"{}").is_err());
        assert!(
            check_response(doc, "GET", "/v1/cases", 200, arrow, &[0xff]).is_err(),
            "not declared for a JSON route"
        );
        let mut h = hyper::HeaderMap::new();
        for name in [
            "x-sharebroker-audit-entry",
            "x-sharebroker-dataset-version",
            "x-sharebroker-rows",
        ] {
            h.insert(name, hyper::header::HeaderValue::from_static("7"));
        }
        for name in [
            "x-sharebroker-dataset",
            "x-sharebroker-policy-version",
            "x-sharebroker-grant",
            "x-sharebroker-purpose",
            "x-sharebroker-fields",
            "x-sharebroker-withheld",
            "trailer",
        ] {
            h.insert(name, hyper::header::HeaderValue::from_static("x"));
        }
        assert_eq!(check_response_headers(doc, "GET", path, 200, &h), Ok(()));
        h.insert(
            "x-sharebroker-rows",
            hyper::header::HeaderValue::from_static("many"),
        );
        h.remove("x-sharebroker-grant");
        let e = check_response_headers(doc, "GET", path, 200, &h).unwrap_err();
        assert!(e.contains("`x-sharebroker-grant` is required"), "{e}");
        assert!(
            e.contains("`x-sharebroker-rows`: \"many\" is not an integer"),
            "{e}"
        );
    }

    #[test]
    fn path_templates_prefer_literal_segments() {
        let doc = json!({ "paths": { "/v1/cases/{case}/close": {}, "/v1/cases": {}, "/v1/audit/tree-head": {}, "/v1/audit/{x}": {} } });
        assert_eq!(
            path_template(&doc, "/v1/cases/A-1/close"),
            Some("/v1/cases/{case}/close")
        );
        assert_eq!(
            path_template(&doc, "/v1/audit/tree-head"),
            Some("/v1/audit/tree-head")
        );
        assert_eq!(
            path_template(&doc, "/v1/audit/report"),
            Some("/v1/audit/{x}")
        );
        assert_eq!(path_template(&doc, "/v1/cases//close"), None);
        assert_eq!(path_template(&doc, "/v1/nope"), None);
    }
}
