//! Validation errors that say where they are.
//!
//! Validation never stops at the first problem: every check pushes onto an [`Errors`] list, so
//! an operator fixing a file sees everything wrong with it at once, each with a path such as
//! `routes/orders.paths[1]`.

use std::fmt;

/// One problem in the config, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Where: the entity (`routes/orders`) and the field within it (`.paths[1]`).
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A growing list of problems found by validation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in the order they were found.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was found, the problems otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

impl Extend<FieldError> for Errors {
    fn extend<I: IntoIterator<Item = FieldError>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Joins an entity path and a field path the way errors show them: `routes/orders` + `paths[1]`
/// gives `routes/orders.paths[1]`.
pub fn join(base: &str, field: &str) -> String {
    if field.is_empty() || field == "." {
        base.to_owned()
    } else if field.starts_with('[') {
        format!("{base}{field}")
    } else {
        format!("{base}.{field}")
    }
}

/// Deserializes one entity from a JSON value, turning a serde error into a [`FieldError`] whose
/// path points at the field at fault.
pub fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value, base: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| FieldError { path: join(base, &e.path().to_string()), message: e.into_inner().to_string() })
}
