//! What people attach to a job to find it again: a name, string key-value tags and notes; their
//! limits, and the patch (`PATCH /v1/jobs/{id}`) that edits them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::nn::FieldError;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest notes, in characters.
pub const MAX_NOTES_CHARS: usize = 10_000;
/// Most tags on one job.
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY_CHARS: usize = 64;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// A job's tags, sorted by key.
pub type Tags = BTreeMap<String, String>;

/// Checks a name: 1 to 200 characters, no control characters.
pub fn check_name(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters long"),
        ));
    } else if name.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "must not contain control characters"));
    }
}

/// Checks notes: at most 10,000 characters (any text, newlines included).
pub fn check_notes(field: &str, notes: &str, errors: &mut Vec<FieldError>) {
    if notes.chars().count() > MAX_NOTES_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be at most {MAX_NOTES_CHARS} characters long"),
        ));
    }
}

/// Checks a tag key: 1 to 64 of `A-Z a-z 0-9 _ . - /` (no `:`, which separates key and value in
/// the `tag` list filter).
pub fn check_tag_key(field: &str, key: &str, errors: &mut Vec<FieldError>) {
    let n = key.chars().count();
    if n == 0 || n > MAX_TAG_KEY_CHARS {
        errors.push(FieldError::new(
            field,
            format!("tag keys must be 1 to {MAX_TAG_KEY_CHARS} characters long"),
        ));
    } else if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
    {
        errors.push(FieldError::new(
            field,
            "tag keys may only contain letters, digits, '_', '.', '-' and '/'",
        ));
    }
}

/// Checks a tag value: at most 256 characters, no control characters.
pub fn check_tag_value(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if value.chars().count() > MAX_TAG_VALUE_CHARS {
        errors.push(FieldError::new(
            field,
            format!("tag values must be at most {MAX_TAG_VALUE_CHARS} characters long"),
        ));
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "tag values must not contain control characters",
        ));
    }
}

/// Checks every tag and their count.
pub fn check_tags(tags: &Tags, errors: &mut Vec<FieldError>) {
    if tags.len() > MAX_TAGS {
        errors.push(FieldError::new(
            "tags",
            format!("at most {MAX_TAGS} tags, got {}", tags.len()),
        ));
        return;
    }
    for (k, v) in tags {
        let field = format!("tags.{k}");
        check_tag_key(&field, k, errors);
        check_tag_value(&field, v, errors);
    }
}

/// Distinguishes a field set to `null` (`Some(None)`) from an absent one (`None`).
fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /v1/jobs/{id}`, a JSON merge patch (RFC 7396): a field left out stays as it is,
/// `null` clears it; in `tags`, a key set to a string is added or changed and a key set to `null`
/// is removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobPatch {
    /// New name (1 to 200 characters), or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// Tags to add or change (a string) or remove (`null`); keys not mentioned are kept.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    pub tags: Option<BTreeMap<String, Option<String>>>,
    /// New notes (up to 10,000 characters), or `null` to remove them.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
}

impl JobPatch {
    /// Applies the patch to a job's current labels, checking the result; every bad field is named.
    pub fn apply(
        &self,
        name: &mut Option<String>,
        tags: &mut Tags,
        notes: &mut Option<String>,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(new) = &self.name {
            if let Some(n) = new {
                check_name("name", n, &mut errors);
            }
            *name = new.clone();
        }
        if let Some(new) = &self.notes {
            if let Some(n) = new {
                check_notes("notes", n, &mut errors);
            }
            *notes = new.clone();
        }
        if let Some(changes) = &self.tags {
            if changes.len() > MAX_TAGS * 2 {
                errors.push(FieldError::new(
                    "tags",
                    format!("at most {} changes in one patch", MAX_TAGS * 2),
                ));
            } else {
                for (k, v) in changes {
                    let field = format!("tags.{k}");
                    check_tag_key(&field, k, &mut errors);
                    match v {
                        Some(v) => {
                            check_tag_value(&field, v, &mut errors);
                            tags.insert(k.clone(), v.clone());
                        }
                        None => {
                            tags.remove(k);
                        }
                    }
                }
                if tags.len() > MAX_TAGS {
                    errors.push(FieldError::new(
                        "tags",
                        format!(
                            "a job has at most {MAX_TAGS} tags; this patch would leave {}",
                            tags.len()
                        ),
                    ));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_sets_clears_and_keeps_fields_and_names_each_bad_one() {
        let patch: JobPatch =
            serde_json::from_str(r#"{"name": null, "tags": {"a": "1", "b": null}}"#).unwrap();
        let (mut name, mut notes) = (Some("old".to_string()), Some("kept".to_string()));
        let mut tags = Tags::from([("b".into(), "x".into()), ("c".into(), "y".into())]);
        patch.apply(&mut name, &mut tags, &mut notes).unwrap();
        assert_eq!(name, None);
        assert_eq!(notes.as_deref(), Some("kept"));
        assert_eq!(
            tags,
            Tags::from([("a".into(), "1".into()), ("c".into(), "y".into())])
        );

        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let bad: JobPatch = serde_json::from_value(serde_json::json!({
            "name": long, "tags": {"no:colons": "v", "ok": "line\nbreak"}, "notes": "n".repeat(MAX_NOTES_CHARS + 1)
        }))
        .unwrap();
        let errors = bad.apply(&mut name, &mut tags, &mut notes).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "notes", "tags.no:colons", "tags.ok"]);
    }
}
