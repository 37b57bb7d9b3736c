//! A record's JSON: the fields of Kong's log serializer, and `node`, written straight from the
//! record into the sink's buffer.
//!
//! The shape is fixed, so it is written by hand rather than through `serde_json`: that costs
//! less than half the instructions (measured with `scripts/instructions BIN access-log`, see
//! docs/benchmarks.md), most of the difference being strings that need no escaping copied
//! whole, and no call per punctuation byte. Strings are escaped as RFC 8259 says; bytes that are
//! not UTF-8 (a header value may hold any) become U+FFFD, as `String::from_utf8_lossy` does.

use super::record::Record;
use bytes::Bytes;
use http::HeaderMap;
use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

impl Record {
    /// The record as one JSON object (no line break), made once and shared by the sinks that
    /// send it whole.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let mut out = Vec::with_capacity(1024);
            write(self, &mut out);
            Bytes::from(out)
        })
    }

    /// Appends the JSON object to `out`: the one made already, or written straight from the
    /// fields (nothing kept: a sink that writes lines needs no copy of its own).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self.json.get() {
            Some(json) => out.extend_from_slice(json),
            None => write(self, out),
        }
    }
}

/// Appends `record` as one JSON object (no line break) to `out`.
fn write(record: &Record, out: &mut Vec<u8>) {
    let mut json = Json(out);
    let scheme = if record.https { "https://" } else { "http://" };
    json.raw(r#"{"request":{"method":"#);
    json.string(record.method.as_str());
    json.raw(r#","uri":"#);
    json.string(&record.uri);
    json.raw(r#","url":""#);
    json.raw(scheme);
    json.escaped(record.host.as_deref().unwrap_or(""));
    json.escaped(&record.uri);
    json.raw(r#"","size":"#);
    json.number(record.request_size);
    json.raw(r#","querystring":"#);
    json.query(record.uri.split_once('?').map_or("", |(_, q)| q));
    json.raw(r#","headers":"#);
    json.headers(&record.request_headers);
    json.raw(r#"},"response":{"status":"#);
    json.number(u64::from(record.status));
    json.raw(r#","size":"#);
    json.number(record.response_size);
    json.raw(r#","headers":"#);
    json.headers(&record.response_headers);
    json.raw(r#"},"latencies":{"request":"#);
    json.number(ms(record.request_latency));
    json.raw(r#","proxy":"#);
    json.number(ms(record.proxy_latency));
    json.raw(r#","upstream":"#);
    match record.upstream_latency {
        Some(latency) => json.number(ms(latency)),
        None => json.raw("-1"),
    }
    json.raw(r#"},"client_ip":"#);
    json.string(record.client_ip.to_str().unwrap_or(""));
    json.raw(r#","started_at":"#);
    json.number(record.started_at.duration_since(UNIX_EPOCH).map_or(0, ms));
    json.raw(r#","node":"#);
    json.string(&record.node);
    if let Some(service) = &record.service {
        json.raw(r#","service":{"name":"#);
        json.string(service);
        json.raw("}");
    }
    if let Some(route) = &record.route {
        json.raw(r#","route":{"name":"#);
        json.string(route);
        json.raw("}");
    }
    if let Some((username, custom_id)) = &record.consumer {
        json.raw(r#","consumer":{"username":"#);
        json.string(username);
        if let Some(custom_id) = custom_id.as_ref().and_then(|v| v.to_str().ok()) {
            json.raw(r#","custom_id":"#);
            json.string(custom_id);
        }
        json.raw("}");
    }
    if let Some(upstream_uri) = &record.upstream_uri {
        json.raw(r#","upstream_uri":"#);
        json.string(upstream_uri);
    }
    if let Some(target) = &record.target {
        // Kong's `tries`: the targets tried. Here the one that answered, as configured.
        let (ip, port) = target.rsplit_once(':').unwrap_or((target, ""));
        json.raw(r#","tries":[{"ip":"#);
        json.string(ip.trim_start_matches('[').trim_end_matches(']'));
        json.raw(r#","port":"#);
        match port.parse::<u16>() {
            Ok(port) => json.number(u64::from(port)),
            Err(_) => json.raw("null"),
        }
        json.raw("}]");
    }
    json.raw("}");
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    /// Appends `text` as it is: punctuation and keys, which need no escaping.
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    fn number(&mut self, n: u64) {
        self.raw(itoa::Buffer::new().format(n));
    }

    /// `text` as a JSON string, quoted.
    fn string(&mut self, text: &str) {
        self.0.push(b'"');
        self.escaped(text);
        self.0.push(b'"');
    }

    /// `text` escaped for the inside of a JSON string: `"`, `\` and control characters.
    fn escaped(&mut self, text: &str) {
        let bytes = text.as_bytes();
        // Without a short cut, so that the compiler checks many bytes at once.
        let plain = bytes.iter().fold(true, |plain, &b| plain & (b >= 0x20 && b != b'"' && b != b'\\'));
        if plain {
            self.0.extend_from_slice(bytes);
            return;
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.0.extend_from_slice(&bytes[start..i]);
                    self.0.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]);
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            self.0.extend_from_slice(&bytes[start..i]);
            self.0.extend_from_slice(escape);
            start = i + 1;
        }
        self.0.extend_from_slice(&bytes[start..]);
    }

    /// Headers as Kong writes them: lower-case names; a repeated header's values as a list.
    fn headers(&mut self, headers: &HeaderMap) {
        self.0.push(b'{');
        // A name's values come one after another: a list is opened at the second.
        let mut iter = headers.iter().peekable();
        let mut first = true;
        while let Some((name, value)) = iter.next() {
            if !first {
                self.0.push(b',');
            }
            first = false;
            // A header name is a token: no byte of it needs escaping.
            self.0.push(b'"');
            self.raw(name.as_str());
            self.raw("\":");
            let repeated = iter.peek().is_some_and(|(next, _)| *next == name);
            if repeated {
                self.0.push(b'[');
            }
            self.header_value(value.as_bytes());
            while let Some((_, value)) = iter.next_if(|(next, _)| *next == name) {
                self.0.push(b',');
                self.header_value(value.as_bytes());
            }
            if repeated {
                self.0.push(b']');
            }
        }
        self.0.push(b'}');
    }

    /// A header value as a JSON string. Most are printable ASCII with nothing to escape, found in
    /// one pass and copied whole; the others (a quote, a backslash, a tab, bytes past ASCII
    /// that may not be UTF-8) take the long way.
    fn header_value(&mut self, bytes: &[u8]) {
        let plain = bytes.iter().fold(true, |plain, &b| plain & ((0x20..0x80).contains(&b) && b != b'"' && b != b'\\'));
        if plain {
            self.0.push(b'"');
            self.0.extend_from_slice(bytes);
            self.0.push(b'"');
        } else {
            self.string(&String::from_utf8_lossy(bytes));
        }
    }

    /// The query's arguments as Kong writes them: decoded; a flag without `=` is `true`; a
    /// repeated argument's values as a list, in the order given.
    fn query(&mut self, query: &str) {
        // Few arguments to a query: a list searched by name keeps their order and costs no hashing.
        let mut arguments: Arguments<'_> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (decode(name), Some(decode(value))),
                None => (decode(pair), None),
            };
            match arguments.iter_mut().find(|(held, _)| *held == name) {
                Some((_, values)) => values.push(value),
                None => arguments.push((name, vec![value])),
            }
        }
        self.0.push(b'{');
        for (i, (name, values)) in arguments.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.string(name);
            self.0.push(b':');
            if let [one] = values.as_slice() {
                self.argument(one.as_deref());
                continue;
            }
            self.0.push(b'[');
            for (j, value) in values.iter().enumerate() {
                if j > 0 {
                    self.0.push(b',');
                }
                self.argument(value.as_deref());
            }
            self.0.push(b']');
        }
        self.0.push(b'}');
    }

    fn argument(&mut self, value: Option<&str>) {
        match value {
            Some(text) => self.string(text),
            None => self.raw("true"),
        }
    }
}

/// A query's arguments by name, in the order given; `None` for a flag without `=`.
type Arguments<'q> = Vec<(Cow<'q, str>, Vec<Option<Cow<'q, str>>>)>;

/// `text` with `+` as a space and percent-escapes decoded; borrowed when there is nothing to do.
fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains('+') {
        return percent_encoding::percent_decode_str(text).decode_utf8_lossy();
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        Json(&mut out).string(text);
        String::from_utf8(out).unwrap()
    }

    /// Every string round-trips through a JSON parser written by others.
    #[test]
    fn strings_are_escaped_as_json_reads_them() {
        for text in
            ["plain", "", "q\"uote", "back\\slash", "line\nfeed\r\t", "\u{0}\u{1f}\u{7f}", "é ✓ 😀", "\u{8}\u{c}"]
        {
            let json = escaped(text);
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), text, "{json}");
        }
        assert_eq!(escaped("a\u{1}b"), r#""a\u0001b""#);
    }

    #[test]
    fn repeated_headers_and_arguments_are_lists_in_order() {
        let mut headers = HeaderMap::new();
        headers.append("x-one", "1".parse().unwrap());
        headers.append("x-many", "a".parse().unwrap());
        headers.append("x-many", "b\"c".parse().unwrap());
        headers.append("x-bin", http::HeaderValue::from_bytes(b"\xff ok").unwrap());
        let mut out = Vec::new();
        Json(&mut out).headers(&headers);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"x-one": "1", "x-many": ["a", "b\"c"], "x-bin": "\u{fffd} ok"}));

        let mut out = Vec::new();
        Json(&mut out).query("b=2&a=x+y%21&b=3&flag&=empty&c=%ZZ");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"b": ["2", "3"], "a": "x y!", "flag": true, "": "empty", "c": "%ZZ"}));
        let mut out = Vec::new();
        Json(&mut out).query("");
        assert_eq!(out, b"{}");
    }
}
