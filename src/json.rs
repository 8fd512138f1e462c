//! Decoding the JSON documents callers pass in (the configuration, labels,
//! infos, mounts, options). An error names the field at fault and says what
//! was expected and what was found, on one line:
//! `config field "set_immutable": expected a boolean, got the string "yes"`,
//! not serde's `invalid type: string "yes", expected a boolean at line 1
//! column 62` for every field.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

/// Why a document did not decode.
#[derive(Debug)]
pub(crate) enum JsonError {
    /// Not JSON (serde_json's message, with its position).
    Syntax(String),
    /// JSON of the wrong shape: where, and why.
    Field { path: Vec<Step>, cause: String },
}

/// One step of the path to the value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// Decodes `text` as a `T`.
pub(crate) fn decode<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let e = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            return de
                .end()
                .map(|()| v)
                .map_err(|e| JsonError::Syntax(e.to_string()))
        }
        Err(e) => e,
    };
    let mut path: Vec<Step> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    let inner = e.into_inner();
    if !inner.is_data() {
        return Err(JsonError::Syntax(inner.to_string()));
    }
    // The position says nothing the path does not; serde_json appends it.
    let full = inner.to_string();
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let cause = cause(message, text, &mut path);
    Err(JsonError::Field { path, cause })
}

/// serde's message for a value at `path` of `text`, in JSON's words.
fn cause(message: &str, text: &str, path: &mut Vec<Step>) -> String {
    let value = || {
        let v = serde_json::from_str::<Value>(text).ok()?;
        value_at(&v, path).cloned()
    };
    if let Some((unexpected, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.rsplit_once(", expected "))
    {
        // The value itself when the document parses, else serde's words.
        let got = value().map_or_else(|| unexpected.to_string(), |v| describe(&v));
        return format!("expected {}, got {got}", expected_in_json_terms(expected));
    }
    // serde reads a struct from an array too, and then counts elements.
    if message.starts_with("invalid length ")
        && message.contains(", expected struct ")
        && value().is_some_and(|v| v.is_array())
    {
        return "expected an object, got an array".to_string();
    }
    // serde names the field in these; the path names it already.
    if let Some((_, expected)) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once("`, "))
    {
        return format!("unknown field, {expected}");
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        path.push(Step::Key(field.to_string()));
        return "required but missing".to_string();
    }
    message.to_string()
}

impl JsonError {
    /// The message for the document called `what` (`config`, `labels_json`).
    /// `labels` is where a map of labels is (its path of field names; empty
    /// for the document itself): a value in it is named as a label.
    pub fn message(&self, what: &str, labels: Option<&[&str]>) -> String {
        let (path, cause) = match self {
            JsonError::Syntax(m) => return format!("{what}: invalid JSON: {m}"),
            JsonError::Field { path, cause } => (path, cause),
        };
        if let Some(prefix) = labels {
            if let Some((Step::Key(label), head)) = path.split_last() {
                if head.len() == prefix.len()
                    && head
                        .iter()
                        .zip(prefix)
                        .all(|(s, p)| *s == Step::Key(p.to_string()))
                {
                    return format!("{what}: label {}: {cause}", quote(label));
                }
            }
        }
        match path.first() {
            None => format!("{what}: {cause}"),
            Some(Step::Key(_)) => format!("{what} field {}: {cause}", render(path)),
            Some(Step::Index(_)) => format!("{what}{}: {cause}", render(path)),
        }
    }
}

/// `"mkfs_options"[1]`, `"labels"."k"`, `[0]."type"`.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for (i, step) in path.iter().enumerate() {
        match step {
            Step::Key(k) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(&quote(k));
            }
            Step::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn value_at<'a>(mut v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    for step in path {
        v = match step {
            Step::Key(k) => v.get(k.as_str())?,
            Step::Index(n) => v.get(*n)?,
        };
    }
    Some(v)
}

/// A JSON value in a message: `the string "yes"`, `the number 5`, `an array`.
fn describe(v: &Value) -> String {
    const MAX_CHARS: usize = 64;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let head: String = s.chars().take(MAX_CHARS).collect();
            format!("the string {}... ({} bytes)", quote(&head), s.len())
        }
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// serde's name of the expected type, in JSON's words.
fn expected_in_json_terms(expected: &str) -> String {
    match expected {
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        "path string" => "a string".into(),
        e if e.starts_with("struct ") => "an object".into(),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        flag: Option<bool>,
        list: Option<Vec<String>>,
        labels: Option<BTreeMap<String, String>>,
    }

    fn msg<T: DeserializeOwned + std::fmt::Debug>(text: &str, labels: Option<&[&str]>) -> String {
        decode::<T>(text).unwrap_err().message("doc", labels)
    }

    #[test]
    fn errors_name_the_field_and_the_cause() {
        let long = "x".repeat(100);
        for (text, want) in [
            (
                r#"{"flag": "yes"}"#,
                r#"doc field "flag": expected a boolean, got the string "yes""#,
            ),
            (
                r#"{"flag": 1.5}"#,
                r#"doc field "flag": expected a boolean, got the number 1.5"#,
            ),
            (
                r#"{"list": "-T0"}"#,
                r#"doc field "list": expected an array, got the string "-T0""#,
            ),
            (
                r#"{"list": ["a", 7]}"#,
                r#"doc field "list"[1]: expected a string, got the number 7"#,
            ),
            (
                r#"{"labels": []}"#,
                r#"doc field "labels": expected an object, got an array"#,
            ),
            (
                r#"{"labels": {"k": null}}"#,
                r#"doc: label "k": expected a string, got null"#,
            ),
            (
                r#""flag""#,
                r#"doc: expected an object, got the string "flag""#,
            ),
            (
                &format!(r#"{{"flag": "{long}"}}"#),
                &format!(
                    r#"doc field "flag": expected a boolean, got the string "{}"... (100 bytes)"#,
                    "x".repeat(64)
                ),
            ),
        ] {
            assert_eq!(msg::<Doc>(text, Some(&["labels"])), want, "{text}");
        }
        // Without a labels map, a label is a field like any other.
        assert_eq!(
            msg::<Doc>(r#"{"labels": {"k": 1}}"#, None),
            r#"doc field "labels"."k": expected a string, got the number 1"#
        );
        // Arrays at the top: the index follows the name.
        assert_eq!(
            msg::<Vec<Doc>>(r#"[{}, {"flag": 0}]"#, None),
            r#"doc[1]."flag": expected a boolean, got the number 0"#
        );
        // A map of labels as the document itself.
        assert_eq!(
            msg::<BTreeMap<String, String>>(r#"{"a": "1", "b": {"c": 2}}"#, Some(&[])),
            r#"doc: label "b": expected a string, got an object"#
        );
    }

    #[test]
    fn other_errors_keep_serdes_words_without_the_position() {
        assert_eq!(
            msg::<Doc>(r#"{"flg": true}"#, None),
            "doc field \"flg\": unknown field, expected one of `flag`, `list`, `labels`"
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Named {
            name: String,
        }
        assert_eq!(
            msg::<Named>(r#"{}"#, None),
            "doc field \"name\": required but missing"
        );
        // Not JSON: the position helps.
        let m = msg::<Doc>(r#"{"flag": tru"#, None);
        assert!(
            m.starts_with("doc: invalid JSON: ") && m.contains("line 1"),
            "{m}"
        );
        let m = msg::<Doc>(r#"{} x"#, None);
        assert!(m.contains("trailing characters"), "{m}");
        // A wrong type in a document that is not JSON further on: serde's words.
        let m = msg::<Doc>(r#"{"flag": "yes", oops"#, None);
        assert_eq!(
            m,
            r#"doc field "flag": expected a boolean, got string "yes""#
        );
    }
}
