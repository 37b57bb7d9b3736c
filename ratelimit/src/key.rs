//! Counter keys: `rl:{<identity>:<value>}:<window_len_secs>:<window_start_secs>`.
//!
//! A key is made only of what the caller says is being limited, the plugin's identity (e.g.
//! `route:orders:<digest of its config>`) and the `limit_by` value (an IP, a header value, …), and
//! never of the node, so every node counts in the same counter (APISIX #6760 keyed them per node).
//!
//! Everything between the braces is Redis Cluster's hash tag, so all the keys of one decision (every
//! window, current and previous) land in one slot and one script can touch them all. Neither part
//! can break out of it:
//! - the identity keeps printable ASCII but `{`, `}` and `%`, which are percent-encoded with
//!   everything else;
//! - the value keeps `A-Z a-z 0-9 . _ ~ -` and percent-encodes the rest, so it holds no `:` and the
//!   last `:` in the tag separates the two parts; a value longer than 128 bytes once encoded is
//!   replaced by `#` and its SHA-256 in hex, so a long header cannot make a long key.
//!
//! Both encodings are one-to-one, so two different (identity, value) pairs never share a counter
//! (short of a SHA-256 collision).

use std::fmt::Write as _;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::window::unix_ms;
use crate::Window;

/// Values longer than this once encoded are hashed.
const MAX_VALUE_LEN: usize = 128;

/// The base of every counter key for `value` under `identity`: `rl:{<identity>:<value>}`, both
/// parts encoded as the module explains. Pass it to [`crate::Store::check`].
pub fn counter_key(identity: &str, value: &str) -> String {
    let mut key = String::with_capacity(6 + identity.len() + value.len().min(MAX_VALUE_LEN));
    key.push_str("rl:{");
    push_encoded(&mut key, identity, |byte| byte.is_ascii_graphic() && !matches!(byte, b'{' | b'}' | b'%'));
    key.push(':');
    let value_start = key.len();
    // Encoding never shortens, so a value already over the bound is hashed without encoding it.
    if value.len() <= MAX_VALUE_LEN {
        push_encoded(&mut key, value, |byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'-'));
    }
    if value.len() > MAX_VALUE_LEN || key.len() - value_start > MAX_VALUE_LEN {
        key.truncate(value_start);
        key.push('#');
        for byte in Sha256::digest(value.as_bytes()) {
            let _ = write!(key, "{byte:02x}");
        }
    }
    key.push('}');
    key
}

/// Appends `text` with every byte `keep` refuses percent-encoded; runs of kept bytes (all
/// ASCII) are copied whole.
fn push_encoded(key: &mut String, text: &str, keep: impl Fn(u8) -> bool) {
    let mut rest = text;
    while let Some(at) = rest.bytes().position(|byte| !keep(byte)) {
        key.push_str(&rest[..at]);
        let width = rest[at..].chars().next().map_or(1, char::len_utf8);
        for &byte in &rest.as_bytes()[at..at + width] {
            push_escaped(key, byte);
        }
        rest = &rest[at + width..];
    }
    key.push_str(rest);
}

/// The key of the counter of `window` that holds `now`: `<key_base>:<len_secs>:<start_secs>`.
pub fn window_key(key_base: &str, window: Window, now: SystemTime) -> String {
    window_key_at(key_base, window, window.clock(unix_ms(now)).start_secs())
}

/// The key of the counter of `window` that starts at `start_secs`.
pub(crate) fn window_key_at(key_base: &str, window: Window, start_secs: u64) -> String {
    format!("{key_base}:{}:{start_secs}", window.secs())
}

fn push_escaped(key: &mut String, byte: u8) {
    let _ = write!(key, "%{byte:02X}");
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn plain_values_read_as_they_are() {
        assert_eq!(counter_key("route:orders:3f2a", "10.0.0.7"), "rl:{route:orders:3f2a:10.0.0.7}");
        let now = UNIX_EPOCH + Duration::from_millis(1_704_067_259_500);
        assert_eq!(
            window_key("rl:{route:orders:3f2a:10.0.0.7}", Window::Minute, now),
            "rl:{route:orders:3f2a:10.0.0.7}:60:1704067200"
        );
    }

    #[test]
    fn values_cannot_break_the_hash_tag_or_the_separator() {
        assert_eq!(counter_key("r", "2001:db8::1"), "rl:{r:2001%3Adb8%3A%3A1}");
        assert_eq!(counter_key("r", "a}b{c d%"), "rl:{r:a%7Db%7Bc%20d%25}");
        assert_eq!(counter_key("id}{x", "v"), "rl:{id%7D%7Bx:v}");
        assert_eq!(counter_key("r", "é"), "rl:{r:%C3%A9}");
        // One pair cannot pass for another.
        assert_ne!(counter_key("a:b", "c"), counter_key("a", "b:c"));
        for key in [counter_key("r", "}{}{"), counter_key("{{", "::")] {
            assert_eq!(key.matches('{').count(), 1, "{key}");
            assert_eq!(key.matches('}').count(), 1, "{key}");
        }
    }

    #[test]
    fn long_values_are_hashed() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let key = counter_key("r", &long);
        assert_eq!(key.len(), "rl:{r:#}".len() + 64);
        assert!(key.starts_with("rl:{r:#") && key.ends_with('}'));
        assert_ne!(key, counter_key("r", &"x".repeat(MAX_VALUE_LEN + 2)));
        assert_eq!(counter_key("r", &"x".repeat(MAX_VALUE_LEN)).len(), "rl:{r:}".len() + MAX_VALUE_LEN);
        // A value that escapes past the bound is hashed too.
        assert!(counter_key("r", &":".repeat(50)).starts_with("rl:{r:#"));
    }
}
