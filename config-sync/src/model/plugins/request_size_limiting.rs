//! The `request-size-limiting` plugin's config, with Kong's fields and defaults.

use crate::validate::Errors;
use serde::{Deserialize, Serialize};

/// The unit of `allowed_payload_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    /// 1,048,576 bytes (the default, as Kong's).
    #[default]
    Megabytes,
    /// 1,024 bytes.
    Kilobytes,
    /// Bytes.
    Bytes,
}

/// The `request-size-limiting` plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestSizeLimiting {
    /// The largest request body allowed, in `size_unit`s. Default 128.
    pub allowed_payload_size: u64,
    /// Default megabytes.
    pub size_unit: SizeUnit,
    /// Refuse (411) a request with a body but no `Content-Length` (a chunked one). Default false.
    pub require_content_length: bool,
}

impl Default for RequestSizeLimiting {
    fn default() -> Self {
        RequestSizeLimiting { allowed_payload_size: 128, size_unit: SizeUnit::Megabytes, require_content_length: false }
    }
}

impl RequestSizeLimiting {
    /// The limit in bytes.
    pub fn limit_bytes(&self) -> u64 {
        let unit = match self.size_unit {
            SizeUnit::Megabytes => 1 << 20,
            SizeUnit::Kilobytes => 1 << 10,
            SizeUnit::Bytes => 1,
        };
        self.allowed_payload_size.saturating_mul(unit)
    }

    /// Pushes every problem onto `errors`, under `path`.
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.allowed_payload_size == 0 {
            errors.push(format!("{path}.allowed_payload_size"), "must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::from_value;

    #[test]
    fn kong_defaults_and_units() {
        let config: RequestSizeLimiting = from_value(serde_json::json!({}), "p").unwrap();
        assert_eq!(config.limit_bytes(), 128 << 20);
        let config: RequestSizeLimiting =
            from_value(serde_json::json!({"allowed_payload_size": 3, "size_unit": "kilobytes"}), "p").unwrap();
        assert_eq!(config.limit_bytes(), 3072);
        let mut errors = Errors::default();
        RequestSizeLimiting { allowed_payload_size: 0, ..config }.validate("p", &mut errors);
        assert_eq!(errors.into_vec()[0].path, "p.allowed_payload_size");
        assert!(from_value::<RequestSizeLimiting>(serde_json::json!({"size_unit": "gigabytes"}), "p").is_err());
    }
}
