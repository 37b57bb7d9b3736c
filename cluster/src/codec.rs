//! The wire codec: bincode 2 (serde API, standard config) for everything this crate puts on the wire.
//!
//! A packet is `[WIRE_VERSION][envelope …][body]` (see `envelope.rs` for the envelope). The body is
//! one kind byte and its payload:
//! - [`KIND_SWIM`]: a foca packet, in foca's own layout (a header, then a `u16` count of member
//!   updates) whose header and members are bincode-encoded by [`SwimCodec`];
//! - [`KIND_CORE`]: one bincode-encoded [`CoreFrame`]: joining, messages, anti-entropy, and
//!   suspicion checks.
//!
//! Decoding is bounded ([`LIMIT`]): a length prefix cannot make the decoder allocate more than a
//! packet could hold, and trailing bytes after a frame are an error.

use std::sync::{
    atomic::{AtomicU16, Ordering},
    Arc,
};

use bytes::{Buf, BufMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    identity::NodeIdentity,
    messages::{Digest, PullRequest, WireMessage},
    state::{StateDigest, StateEntry},
};

/// The first byte of every packet: the wire format. This node sends it to every peer that sent
/// it this version (and to peers not heard from yet), and takes packets of it or of
/// [`OLDEST_WIRE_VERSION`] (`codec_v1.rs`); others are refused as `version`.
pub(crate) const WIRE_VERSION: u8 = 2;
/// The oldest wire format this node still speaks, to nodes one version older.
pub(crate) const OLDEST_WIRE_VERSION: u8 = 1;

/// Body kind: a foca (SWIM) packet.
pub(crate) const KIND_SWIM: u8 = 1;
/// Body kind: a [`CoreFrame`].
pub(crate) const KIND_CORE: u8 = 2;

/// Largest allocation a decode may make; well above any packet.
const LIMIT: usize = 64 * 1024;

fn config(
) -> bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Varint, bincode::config::Limit<LIMIT>>
{
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Why bytes could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    /// bincode refused to encode (in practice: a value larger than the limit).
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The encoding does not fit in the space foca gave.
    #[error("no room: {needed} bytes needed, {available} available")]
    NoRoom {
        /// Encoded size.
        needed: usize,
        /// Space left in the buffer.
        available: usize,
    },
    /// Bytes were left after the value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Encodes `value` with bincode's standard configuration.
pub(crate) fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes one value from the start of `bytes`; returns it and how many bytes it used.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, config())?)
}

/// Decodes exactly one value: trailing bytes are an error.
pub(crate) fn from_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = from_slice(bytes)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Everything besides foca packets that nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CoreFrame {
    /// "Let me join": sent to a seed's address, whose identity the joiner cannot know yet.
    Hello {
        /// The joiner.
        from: NodeIdentity,
    },
    /// The answer to `Hello`: the seed's identity, which the joiner then announces itself to.
    Welcome {
        /// The seed.
        from: NodeIdentity,
    },
    /// Part of a member list (foca's full membership state): sent by a seed with `Welcome`, so that
    /// the joiner knows every member at once (foca's announce answer holds only what fits in one
    /// packet), and in answer to a `Digest` whose membership summary shows the sender knows fewer
    /// members (nodes that joined at the same time through different seeds).
    Members(Vec<foca::Member<NodeIdentity>>),
    /// Messages. `relay`: pushed eagerly; forward each one to a few members on first receipt.
    Push {
        /// The messages.
        messages: Vec<WireMessage>,
        /// Whether receivers forward what is new to them.
        relay: bool,
    },
    /// Anti-entropy: the messages the sender holds, and a summary of the members it knows. The
    /// receiver pulls what it lacks and pushes what the sender lacks.
    Digest {
        /// The messages.
        messages: Digest,
        /// The members.
        members: MembershipSummary,
        /// The sender's view of the members whose state changed lately (see `ChangeLog`).
        changes: Vec<foca::Member<NodeIdentity>>,
    },
    /// Anti-entropy: the messages the sender lacks, by id.
    Pull(PullRequest),
    /// "You are suspected at this incarnation; refute it to me": sent before a suspect is declared
    /// down, answered by an announce carrying the refuted incarnation.
    SuspectCheck {
        /// The suspect, as the sender knows it.
        target: NodeIdentity,
        /// The incarnation under suspicion.
        incarnation: u16,
        /// The member that will declare it down.
        from: NodeIdentity,
    },
    // Durable state (`state.rs`). New variants go last: the earlier ones keep their encoding.
    /// Durable state entries. `relay`: a write pushed eagerly; forward what is new on first
    /// receipt.
    State {
        /// The entries.
        entries: Vec<StateEntry>,
        /// Whether receivers forward what is new to them.
        relay: bool,
    },
    /// Push-pull: part of the sender's bucket hashes. The receiver sends its entries of the
    /// buckets that differ and asks for the sender's with `StateWant`.
    StateDigest(StateDigest),
    /// Push-pull: the entries the sender wants, by bucket.
    StateWant(Vec<u16>),
    /// A question for every live member (`query.rs`), answered with `Answer`s.
    Query {
        /// The asker's number for it.
        id: u64,
        /// What is asked, as the user encoded it.
        payload: Vec<u8>,
    },
    /// One part of a member's answer to a `Query`.
    Answer {
        /// The query's number.
        id: u64,
        /// The member answering.
        from: String,
        /// This part's index, from 0.
        part: u16,
        /// How many parts the answer has.
        parts: u16,
        /// This part's bytes.
        bytes: Vec<u8>,
    },
}

/// Which members a node knows (alive or down), in a few bytes: two nodes that know the same
/// members have equal summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MembershipSummary {
    /// Members known, this node included.
    pub(crate) count: u32,
    /// XOR of the members' slots (see `identity.rs`).
    pub(crate) hash: u64,
}

/// foca's codec over bincode.
///
/// It also notes the incarnation of every header it encodes (always this node's own, since foca
/// only encodes headers it sends), because foca does not expose its own incarnation otherwise.
#[derive(Debug, Default)]
pub(crate) struct SwimCodec {
    incarnation: Arc<AtomicU16>,
}

impl SwimCodec {
    /// A codec that writes this node's latest incarnation into `incarnation`.
    pub(crate) fn new(incarnation: Arc<AtomicU16>) -> Self {
        Self { incarnation }
    }

    fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
        let bytes = to_vec(value)?;
        if buf.remaining_mut() < bytes.len() {
            // Nothing written: foca requires the buffer to be left clean.
            return Err(CodecError::NoRoom { needed: bytes.len(), available: buf.remaining_mut() });
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn take<T: DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
        // foca hands a contiguous buffer, so its first chunk is all of it.
        let (value, used) = from_slice(buf.chunk())?;
        buf.advance(used);
        Ok(value)
    }
}

impl foca::Codec<NodeIdentity> for SwimCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &foca::Header<NodeIdentity>, buf: impl BufMut) -> Result<(), Self::Error> {
        self.incarnation.store(header.src_incarnation, Ordering::Relaxed);
        Self::put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<foca::Header<NodeIdentity>, Self::Error> {
        Self::take(buf)
    }

    fn encode_member(&mut self, member: &foca::Member<NodeIdentity>, buf: impl BufMut) -> Result<(), Self::Error> {
        Self::put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<NodeIdentity>, Self::Error> {
        Self::take(buf)
    }
}

#[cfg(test)]
mod tests {
    use foca::Codec;

    use super::*;
    use crate::messages::{Message, MessageId};

    fn id(name: &str) -> NodeIdentity {
        NodeIdentity::new(name, "10.0.0.1:7946".parse().unwrap(), 1_700_000_000_000, 42)
    }

    #[test]
    fn core_frames_round_trip() {
        let frames = vec![
            CoreFrame::Hello { from: id("a") },
            CoreFrame::Welcome { from: id("b") },
            CoreFrame::Members(vec![foca::Member::alive(id("c")), foca::Member::new(id("d"), 3, foca::State::Suspect)]),
            CoreFrame::Push {
                messages: vec![WireMessage {
                    id: MessageId { origin: "a".into(), boot: 7, seq: 3 },
                    age_ms: 12,
                    message: Message(b"purge /x".to_vec()),
                }],
                relay: true,
            },
            CoreFrame::SuspectCheck { target: id("c"), incarnation: 9, from: id("a") },
            CoreFrame::State {
                entries: vec![crate::state::StateEntry {
                    key: "health/u/t:80".into(),
                    version: crate::state::Version {
                        time: crate::state::Hlc { ms: 1_700_000_000_000, counter: 2 },
                        origin: "a".into(),
                    },
                    value: vec![1],
                }],
                relay: true,
            },
            CoreFrame::StateDigest(crate::state::StateDigest { first: 64, hashes: vec![u64::MAX, 0, 7] }),
            CoreFrame::StateWant(vec![0, 255]),
            CoreFrame::Query { id: 3, payload: b"health of api".to_vec() },
            CoreFrame::Answer { id: 3, from: "b".into(), part: 0, parts: 2, bytes: vec![1, 2, 3] },
        ];
        for frame in frames {
            let bytes = to_vec(&frame).unwrap();
            let back: CoreFrame = from_exact(&bytes).unwrap();
            assert_eq!(back, frame);
            // Any strict prefix fails cleanly, and so do trailing bytes.
            for cut in 0..bytes.len() {
                assert!(from_exact::<CoreFrame>(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(from_exact::<CoreFrame>(&longer), Err(CodecError::Trailing(1))));
        }
    }

    #[test]
    fn swim_codec_round_trips_headers_and_members() {
        let incarnation = Arc::new(AtomicU16::new(0));
        let mut codec = SwimCodec::new(incarnation.clone());
        let header = foca::Header { src: id("a"), src_incarnation: 5, dst: id("b"), message: foca::Message::Ping(3) };
        let mut buf = Vec::new();
        codec.encode_header(&header, &mut buf).unwrap();
        assert_eq!(incarnation.load(Ordering::Relaxed), 5);
        let member = foca::Member::new(id("c"), 2, foca::State::Suspect);
        codec.encode_member(&member, &mut buf).unwrap();
        let mut slice = &buf[..];
        assert_eq!(codec.decode_header(&mut slice).unwrap(), header);
        assert_eq!(codec.decode_member(&mut slice).unwrap(), member);
        assert!(slice.is_empty());
    }

    #[test]
    fn swim_codec_leaves_a_full_buffer_clean() {
        let mut codec = SwimCodec::default();
        let member = foca::Member::alive(id("a-rather-long-node-name"));
        let mut storage = Vec::new();
        let mut limited = (&mut storage).limit(8);
        assert!(matches!(codec.encode_member(&member, &mut limited), Err(CodecError::NoRoom { .. })));
        assert!(storage.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut codec = SwimCodec::default();
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(len)).collect();
            let _ = codec.decode_header(&junk[..]);
            let _ = from_exact::<CoreFrame>(&junk);
        }
        // A length prefix claiming far more than the limit is refused before allocating.
        let huge = [0u8, 0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(from_exact::<CoreFrame>(&huge).is_err());
    }
}
