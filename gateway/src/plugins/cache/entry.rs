//! A cached response: status, headers, body, when it was stored and for how long, and the
//! request header values it varies on. Encoded compactly for Redis (and kept as is in memory).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's end-to-end headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored, ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long it may be served, ms: its freshness lifetime.
    pub ttl_ms: u64,
    /// Its age when stored, ms (RFC 9111 `corrected_initial_age`; 0 without `cache_control`).
    pub initial_age_ms: u64,
    /// How long it is kept once stale, ms: for revalidation and RFC 5861's leave.
    pub keep_ms: u64,
    /// The request headers (lower case) the response varies on, with the values of the request
    /// that fetched it, normalised ([`vary_value`]): another request is served this entry only
    /// if its values are the same.
    pub vary: Vec<(String, Option<HeaderValue>)>,
    /// The resource it was stored under ([`super::key::resource_key`]), with `cache_control`:
    /// an invalidation drops every entry of the resource.
    pub resource: Option<String>,
}

/// Why bytes are not an entry.
#[derive(Debug, thiserror::Error)]
#[error("not a cache entry: {0}")]
pub struct DecodeError(&'static str);

/// The encoding written; version 2, without the resource, is still read.
const VERSION: u8 = 3;

impl Entry {
    /// The age at `now`, seconds (the `Age` header): its age when stored plus the time since.
    pub fn age(&self, now: SystemTime) -> u64 {
        self.initial_age_ms.saturating_add(now_ms(now).saturating_sub(self.stored_at_ms)) / 1000
    }

    /// Whether it is still fresh at `now`.
    pub fn fresh(&self, now: SystemTime) -> bool {
        now_ms(now) < self.fresh_until_ms()
    }

    /// Whether it is still kept at `now` (fresh, or stale within its keep).
    pub fn kept(&self, now: SystemTime) -> bool {
        now_ms(now) < self.fresh_until_ms().saturating_add(self.keep_ms)
    }

    fn fresh_until_ms(&self) -> u64 {
        self.stored_at_ms.saturating_add(self.ttl_ms).saturating_sub(self.initial_age_ms)
    }

    /// How long it is still kept, at `now`.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        Duration::from_millis(self.fresh_until_ms().saturating_add(self.keep_ms).saturating_sub(now_ms(now)))
    }

    /// Whether `request` has the header values this entry was fetched with.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| vary_value(request, name) == *value)
    }

    /// Its headers as a map.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            map.append(name.clone(), value.clone());
        }
        map
    }

    /// Approximate memory used, bytes.
    pub fn weight(&self) -> usize {
        self.body.len() + self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 16).sum::<usize>() + 64
    }

    /// The compact binary form.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight() + 32);
        out.put_u8(VERSION);
        out.put_u16(self.status.as_u16());
        out.put_u64(self.stored_at_ms);
        out.put_u64(self.ttl_ms);
        out.put_u64(self.initial_age_ms);
        out.put_u64(self.keep_ms);
        out.put_u16(self.headers.len() as u16);
        for (name, value) in &self.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        out.put_u16(self.vary.len() as u16);
        for (name, value) in &self.vary {
            put_bytes(&mut out, name.as_bytes());
            match value {
                Some(v) => {
                    out.put_u8(1);
                    put_bytes(&mut out, v.as_bytes());
                }
                None => out.put_u8(0),
            }
        }
        put_bytes(&mut out, self.resource.as_deref().unwrap_or("").as_bytes());
        out.put_slice(&self.body);
        out.freeze()
    }

    /// Reads the compact binary form.
    pub fn decode(mut bytes: Bytes) -> Result<Entry, DecodeError> {
        let need = |b: &Bytes, n: usize| if b.remaining() < n { Err(DecodeError("truncated")) } else { Ok(()) };
        need(&bytes, 1 + 2 + 8 * 4 + 2)?;
        let version = bytes.get_u8();
        if version != VERSION && version != 2 {
            return Err(DecodeError("another version"));
        }
        let status = StatusCode::from_u16(bytes.get_u16()).map_err(|_| DecodeError("bad status"))?;
        let stored_at_ms = bytes.get_u64();
        let ttl_ms = bytes.get_u64();
        let initial_age_ms = bytes.get_u64();
        let keep_ms = bytes.get_u64();
        let count = bytes.get_u16();
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name = HeaderName::from_bytes(&get_bytes(&mut bytes)?).map_err(|_| DecodeError("bad header name"))?;
            let value =
                HeaderValue::from_maybe_shared(get_bytes(&mut bytes)?).map_err(|_| DecodeError("bad header value"))?;
            headers.push((name, value));
        }
        need(&bytes, 2)?;
        let count = bytes.get_u16();
        let mut vary = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name = String::from_utf8(get_bytes(&mut bytes)?.to_vec()).map_err(|_| DecodeError("bad vary name"))?;
            need(&bytes, 1)?;
            let value = match bytes.get_u8() {
                0 => None,
                _ => Some(
                    HeaderValue::from_maybe_shared(get_bytes(&mut bytes)?)
                        .map_err(|_| DecodeError("bad vary value"))?,
                ),
            };
            vary.push((name, value));
        }
        let resource = match version {
            2 => None,
            _ => Some(get_bytes(&mut bytes)?)
                .filter(|r| !r.is_empty())
                .map(|r| String::from_utf8(r.to_vec()).map_err(|_| DecodeError("bad resource")))
                .transpose()?,
        };
        Ok(Entry { status, headers, body: bytes, stored_at_ms, ttl_ms, initial_age_ms, keep_ms, vary, resource })
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn get_bytes(bytes: &mut Bytes) -> Result<Bytes, DecodeError> {
    if bytes.remaining() < 4 {
        return Err(DecodeError("truncated"));
    }
    let len = bytes.get_u32() as usize;
    if bytes.remaining() < len {
        return Err(DecodeError("truncated"));
    }
    Ok(bytes.split_to(len))
}

/// The value of request header `name` as a response varies on it, normalised (RFC 9111 §4.1):
/// its field lines combined, each list member trimmed of whitespace; None when absent.
pub fn vary_value(request: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let mut members = Vec::new();
    for line in lines {
        let Ok(text) = line.to_str() else { return Some(line.clone()) };
        members.extend(text.split(',').map(str::trim).filter(|m| !m.is_empty()));
    }
    HeaderValue::from_str(&members.join(",")).ok()
}

/// `now` as ms since the Unix epoch.
pub fn now_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: vec![(HeaderName::from_static("content-type"), HeaderValue::from_static("application/json"))],
            body: Bytes::from_static(br#"{"a":1}"#),
            stored_at_ms: 1_000_000,
            ttl_ms: 30_000,
            initial_age_ms: 2_000,
            keep_ms: 10_000,
            vary: vec![("x-tenant".into(), Some(HeaderValue::from_static("t1"))), ("x-none".into(), None)],
            resource: Some("r1".into()),
        }
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let e = entry();
        assert_eq!(Entry::decode(e.encode()).unwrap(), e);
        let without = Entry { resource: None, ..entry() };
        assert_eq!(Entry::decode(without.encode()).unwrap(), without);
        let bytes = e.encode();
        for cut in [0, 1, 5, 20, 30] {
            assert!(Entry::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut other = bytes.to_vec();
        other[0] = 9;
        assert!(Entry::decode(Bytes::from(other)).is_err());
    }

    #[test]
    fn freshness_age_and_vary() {
        let e = entry();
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert!(e.fresh(at(1_027_999)) && !e.fresh(at(1_028_000)), "30 s of life, 2 s old when stored");
        assert!(e.kept(at(1_037_999)) && !e.kept(at(1_038_000)), "then kept 10 s");
        assert_eq!(e.age(at(1_012_500)), 14);
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("t1"));
        assert!(e.matches(&h));
        h.insert("x-tenant", HeaderValue::from_static("t2"));
        assert!(!e.matches(&h));
        h.insert("x-tenant", HeaderValue::from_static("t1"));
        h.insert("x-none", HeaderValue::from_static("now set"));
        assert!(!e.matches(&h));
        h.remove("x-none");
        let mut listed = e.clone();
        listed.vary = vec![("accept".into(), Some(HeaderValue::from_static("a/b,c/d")))];
        h.insert("accept", HeaderValue::from_static(" a/b ,  c/d"));
        assert!(listed.matches(&h), "whitespace is normalised");
        h.insert("accept", HeaderValue::from_static("a/b"));
        h.append("accept", HeaderValue::from_static("c/d"));
        assert!(listed.matches(&h), "two field lines are one list");
        h.insert("accept", HeaderValue::from_static("c/d, a/b"));
        assert!(!listed.matches(&h), "order matters");
    }
}
