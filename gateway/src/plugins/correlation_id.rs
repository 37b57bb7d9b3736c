//! `correlation-id`: gives every request an id in a header (`X-Request-ID`), keeping the one it
//! came with, and sends it upstream (and back to the client with `echo_downstream`).
//!
//! Ids are made without a lock or a system call: `uuid` is a version 4 UUID from two fast
//! generators of the thread (`fastrand`'s wyrand, 128 bits of state together, seeded once per
//! thread from std's `RandomState`, whose keys come from the OS's randomness); `uuid#counter`
//! is, as in Kong, one such UUID made once per process followed by `#` and a counter shared by
//! the process's threads. Neither is a secret: an id names a request, it authorizes nothing, so
//! a fast non-cryptographic generator is enough (Kong's is LuaJIT's `math.random`).

use super::pipeline::{Access, BodyFilter, Ctx, Flow, Plugin};
use config_sync::model::IdGenerator;
use http::{response, HeaderName, HeaderValue};
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A compiled `correlation-id` config.
pub(crate) struct CorrelationId {
    header: HeaderName,
    generator: IdGenerator,
    echo_downstream: bool,
}

impl CorrelationId {
    pub(crate) fn new(config: &config_sync::model::CorrelationId) -> CorrelationId {
        // Validated to be a header name.
        let header =
            HeaderName::from_bytes(config.header_name.as_bytes()).unwrap_or(HeaderName::from_static("x-request-id"));
        CorrelationId { header, generator: config.generator, echo_downstream: config.echo_downstream }
    }
}

impl Plugin for CorrelationId {
    fn access<'a>(&'a self, ctx: &'a mut Ctx<'_>) -> Access<'a> {
        let headers = &mut ctx.request.headers;
        let id = match headers.get(&self.header).filter(|v| !v.is_empty()) {
            Some(id) => id.clone(),
            None => {
                let id = generate(self.generator);
                headers.insert(self.header.clone(), id.clone());
                id
            }
        };
        if self.echo_downstream {
            ctx.keep(id);
        }
        Access::Ready(Flow::Continue)
    }

    fn response(&self, ctx: &mut Ctx<'_>, head: &mut response::Parts) -> Option<BodyFilter> {
        if self.echo_downstream {
            if let Some(id) = ctx.take::<HeaderValue>() {
                head.headers.insert(self.header.clone(), id);
            }
        }
        None
    }
}

/// A new id.
fn generate(generator: IdGenerator) -> HeaderValue {
    let mut out = [0u8; UUID_LEN + 1 + 20];
    let len = match generator {
        IdGenerator::Uuid => {
            write_uuid(random_u128(), &mut out);
            UUID_LEN
        }
        IdGenerator::UuidCounter => {
            static PROCESS: OnceLock<[u8; UUID_LEN]> = OnceLock::new();
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            out[..UUID_LEN].copy_from_slice(PROCESS.get_or_init(|| {
                let mut uuid = [0; UUID_LEN];
                write_uuid(random_u128(), &mut uuid);
                uuid
            }));
            out[UUID_LEN] = b'#';
            // Kong's counter starts at 1.
            let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
            UUID_LEN + 1 + write_decimal(n, &mut out[UUID_LEN + 1..])
        }
    };
    HeaderValue::from_bytes(&out[..len]).expect("hex digits, dashes, # and digits")
}

thread_local! {
    /// Two generators: a UUID is one draw of each, so it depends on 128 bits of state.
    static RANDOM: RefCell<[fastrand::Rng; 2]> = RefCell::new([seeded(0), seeded(1)]);
}

/// A generator seeded from the OS's randomness (std's hasher keys).
fn seeded(salt: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(std::collections::hash_map::RandomState::new().hash_one(salt))
}

fn random_u128() -> u128 {
    RANDOM.with_borrow_mut(|[a, b]| (u128::from(a.u64(..)) << 64) | u128::from(b.u64(..)))
}

/// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`: the text of a UUID.
const UUID_LEN: usize = 36;

/// Writes `random` as a version 4 (random), variant 1 UUID, in lower case.
fn write_uuid(random: u128, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Version 4 in bits 76..80, variant 0b10 in bits 62..64.
    let bits = (random & !(0xf << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62);
    let bytes = bits.to_be_bytes();
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
}

/// Writes `n` in decimal at the start of `out`; how many bytes it took.
fn write_decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{header, run, Outcome};
    use std::collections::HashSet;

    fn plugin(json: serde_json::Value) -> CorrelationId {
        CorrelationId::new(&serde_json::from_value(json).unwrap())
    }

    fn is_uuid_v4(text: &str) -> bool {
        let b = text.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            })
            && b[14] == b'4'
            && b"89ab".contains(&b[19])
    }

    #[test]
    fn uuids_are_version_4_and_unique() {
        let ids: HashSet<String> =
            (0..10_000).map(|_| generate(IdGenerator::Uuid).to_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| is_uuid_v4(id)), "{:?}", ids.iter().next());
        let mut out = [0; UUID_LEN];
        write_uuid(0, &mut out);
        assert_eq!(&out, b"00000000-0000-4000-8000-000000000000");
        write_uuid(u128::MAX, &mut out);
        assert_eq!(&out, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
    }

    #[test]
    fn uuid_counter_is_one_uuid_and_a_counter() {
        let a = generate(IdGenerator::UuidCounter).to_str().unwrap().to_owned();
        let b = generate(IdGenerator::UuidCounter).to_str().unwrap().to_owned();
        let (uuid_a, n_a) = a.split_once('#').unwrap();
        let (uuid_b, n_b) = b.split_once('#').unwrap();
        assert!(is_uuid_v4(uuid_a), "{a}");
        assert_eq!(uuid_a, uuid_b, "one uuid per process");
        assert!(n_b.parse::<u64>().unwrap() > n_a.parse::<u64>().unwrap(), "{a} then {b}");
        let mut out = [0; 20];
        assert_eq!(write_decimal(u64::MAX, &mut out), 20);
        assert_eq!(&out, b"18446744073709551615");
        assert_eq!(write_decimal(0, &mut out), 1);
        assert_eq!(out[0], b'0');
    }

    #[test]
    fn an_id_is_kept_or_made_and_echoed_when_asked() {
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let p = plugin(serde_json::json!({"generator": "uuid"}));
        let r = run(&p, http::Request::get("/").body(()).unwrap(), local);
        assert!(matches!(r.outcome, Outcome::Continue));
        assert!(is_uuid_v4(header(&r.request.headers, "x-request-id")));
        assert!(r.response.get("x-request-id").is_none(), "not echoed by default");

        let p = plugin(serde_json::json!({"header_name": "Trace-Me", "echo_downstream": true}));
        let request = http::Request::get("/").header("trace-me", "from-the-client").body(()).unwrap();
        let r = run(&p, request, local);
        assert_eq!(header(&r.request.headers, "trace-me"), "from-the-client");
        assert_eq!(header(&r.response, "trace-me"), "from-the-client");
        let request = http::Request::get("/").header("trace-me", "").body(()).unwrap();
        let r = run(&p, request, local);
        let made = header(&r.request.headers, "trace-me");
        assert!(made.contains('#'), "an empty id is replaced: {made:?}");
        assert_eq!(header(&r.response, "trace-me"), made);
    }
}
