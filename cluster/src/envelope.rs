//! The envelope around every packet: wire version, cluster tag, and (with a keyring) AEAD sealing.
//!
//! ```text
//! open:   [version 1][mode 0][cluster tag 4][body …]
//! sealed: [version 1][mode 1][cluster tag 4][key id 4][nonce 24][ciphertext of body …][tag 16]
//! ```
//! Sealing is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): its 192-bit nonces can be drawn at
//! random for every packet without a realistic chance of reuse, so nodes sharing a key need no
//! coordination. The 34 header bytes are the associated data, so the version, cluster tag and key
//! id cannot be altered either.
//!
//! Keys are SHA-256 of a domain-separation prefix and the configured secret (secrets are expected
//! to be long random strings; this is not a password hash). The key id is four bytes of a second
//! hash of the key: it picks the key to try, it is not secret, and a packet whose id matches no key
//! of the keyring is refused as `auth` without trying any. The first key of the keyring seals; all
//! of them open, which is what makes rotation without downtime possible.
//!
//! The cluster tag is four bytes of SHA-256 of the cluster name: packets of another cluster are
//! refused as `cluster` before any cryptography. Everything is checked in an order that never reads
//! past the packet: length, version, mode, tag, key, seal.

use std::borrow::Cow;

use chacha20poly1305::{
    aead::{AeadInPlace, KeyInit},
    Key, Tag, XChaCha20Poly1305, XNonce,
};
use rand::{rngs::SmallRng, Rng};
use sha2::{Digest, Sha256};

use crate::{
    codec::{OLDEST_WIRE_VERSION, WIRE_VERSION},
    counters::RejectReason,
};

const MODE_OPEN: u8 = 0;
const MODE_SEALED: u8 = 1;
/// Version, mode, cluster tag.
const PREFIX_LEN: usize = 6;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SEALED_HEADER_LEN: usize = PREFIX_LEN + KEY_ID_LEN + NONCE_LEN;

/// One key of the keyring.
struct RingKey {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

/// Seals and opens packets for one cluster with one keyring.
pub(crate) struct Envelope {
    tag: [u8; 4],
    keys: Vec<RingKey>,
    max_packet: usize,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Envelope").field("keys", &self.keys.len()).field("max_packet", &self.max_packet).finish()
    }
}

/// The keys derived from `secrets`, the first sealing.
fn ring(secrets: &[String]) -> Vec<RingKey> {
    secrets
        .iter()
        .map(|secret| {
            let key: [u8; 32] = Sha256::new()
                .chain_update(b"gateway-cluster/key/v1\0")
                .chain_update(secret.as_bytes())
                .finalize()
                .into();
            RingKey {
                id: hash4(b"gateway-cluster/key-id/v1\0", &key),
                cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
            }
        })
        .collect()
}

fn hash4(domain: &[u8], data: &[u8]) -> [u8; 4] {
    let digest = Sha256::new().chain_update(domain).chain_update(data).finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl Envelope {
    /// An envelope for the cluster `cluster`, sealing with `secrets[0]` and opening with any of
    /// `secrets` (none: packets travel open), refusing packets above `max_packet` bytes.
    pub(crate) fn new(cluster: &str, secrets: &[String], max_packet: usize) -> Self {
        Self { tag: hash4(b"gateway-cluster/name/v1\0", cluster.as_bytes()), keys: ring(secrets), max_packet }
    }

    /// This envelope with the keyring `secrets` instead (the same cluster and packet size).
    pub(crate) fn rekeyed(&self, secrets: &[String]) -> Self {
        Self { tag: self.tag, keys: ring(secrets), max_packet: self.max_packet }
    }

    /// Whether packets are sealed (a keyring was given).
    pub(crate) fn sealed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Bytes the envelope adds to a body.
    pub(crate) fn overhead(&self) -> usize {
        if self.keys.is_empty() {
            PREFIX_LEN
        } else {
            SEALED_HEADER_LEN + TAG_LEN
        }
    }

    /// The largest body a packet can carry.
    pub(crate) fn max_body(&self) -> usize {
        self.max_packet - self.overhead()
    }

    /// Wraps the body `[kind][payload]` into a packet of wire `version` (sealed with the first
    /// key, if any).
    pub(crate) fn seal(&self, version: u8, kind: u8, payload: &[u8], rng: &mut SmallRng) -> Vec<u8> {
        let mut packet = Vec::with_capacity(self.overhead() + 1 + payload.len());
        packet.push(version);
        let Some(key) = self.keys.first() else {
            packet.push(MODE_OPEN);
            packet.extend_from_slice(&self.tag);
            packet.push(kind);
            packet.extend_from_slice(payload);
            return packet;
        };
        packet.push(MODE_SEALED);
        packet.extend_from_slice(&self.tag);
        packet.extend_from_slice(&key.id);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        packet.extend_from_slice(&nonce);
        packet.push(kind);
        packet.extend_from_slice(payload);
        let (header, body) = packet.split_at_mut(SEALED_HEADER_LEN);
        // Encryption only fails for bodies beyond ~256 GiB.
        let tag = key.cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce), header, body).unwrap_or_default();
        packet.extend_from_slice(&tag);
        packet
    }

    /// Checks a packet and returns its wire version and body `[kind][payload]`, or why it was
    /// refused. This version and the one before are taken.
    pub(crate) fn open<'a>(&self, packet: &'a [u8]) -> Result<(u8, Cow<'a, [u8]>), RejectReason> {
        if packet.len() > self.max_packet {
            return Err(RejectReason::Oversized);
        }
        if packet.is_empty() {
            return Err(RejectReason::Truncated);
        }
        let version = packet[0];
        if !(OLDEST_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
            return Err(RejectReason::Version);
        }
        if packet.len() < PREFIX_LEN + 1 {
            return Err(RejectReason::Truncated);
        }
        let mode = packet[1];
        if mode != MODE_OPEN && mode != MODE_SEALED {
            return Err(RejectReason::Version);
        }
        if packet[2..PREFIX_LEN] != self.tag {
            return Err(RejectReason::Cluster);
        }
        if mode == MODE_OPEN {
            // An open packet while a keyring is set is exactly what authentication keeps out.
            return if self.keys.is_empty() {
                Ok((version, Cow::Borrowed(&packet[PREFIX_LEN..])))
            } else {
                Err(RejectReason::Auth)
            };
        }
        if packet.len() < SEALED_HEADER_LEN + 1 + TAG_LEN {
            return Err(RejectReason::Truncated);
        }
        let key_id = &packet[PREFIX_LEN..PREFIX_LEN + KEY_ID_LEN];
        let Some(key) = self.keys.iter().find(|key| key.id == key_id) else {
            return Err(RejectReason::Auth);
        };
        let (header, rest) = packet.split_at(SEALED_HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = XNonce::from_slice(&header[PREFIX_LEN + KEY_ID_LEN..]);
        let mut body = ciphertext.to_vec();
        key.cipher
            .decrypt_in_place_detached(nonce, header, &mut body, Tag::from_slice(tag))
            .map_err(|_| RejectReason::Auth)?;
        Ok((version, Cow::Owned(body)))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::codec::KIND_CORE;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    fn keys(secrets: &[&str]) -> Vec<String> {
        secrets.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn open_and_sealed_round_trip() {
        for secrets in [keys(&[]), keys(&["a"]), keys(&["a", "b"])] {
            let envelope = Envelope::new("gw", &secrets, 1400);
            let packet = envelope.seal(WIRE_VERSION, KIND_CORE, b"hello", &mut rng());
            assert_eq!(packet.len(), envelope.overhead() + 6);
            assert_eq!(packet[0], WIRE_VERSION);
            assert_eq!(envelope.open(&packet).unwrap(), (WIRE_VERSION, Cow::Borrowed(&b"\x02hello"[..])));
        }
    }

    #[test]
    fn sealing_hides_the_body_and_varies_per_packet() {
        let envelope = Envelope::new("gw", &keys(&["secret"]), 1400);
        let mut rng = rng();
        let first = envelope.seal(WIRE_VERSION, KIND_CORE, b"plain text body", &mut rng);
        let second = envelope.seal(WIRE_VERSION, KIND_CORE, b"plain text body", &mut rng);
        assert_ne!(first, second);
        assert!(!first.windows(5).any(|w| w == b"plain"));
    }

    #[test]
    fn wrong_key_is_auth() {
        let sender = Envelope::new("gw", &keys(&["a"]), 1400);
        let receiver = Envelope::new("gw", &keys(&["b"]), 1400);
        let packet = sender.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng());
        assert_eq!(receiver.open(&packet).unwrap_err(), RejectReason::Auth);
    }

    #[test]
    fn keyring_rotation() {
        let new_key_sender = Envelope::new("gw", &keys(&["B"]), 1400);
        let rotating = Envelope::new("gw", &keys(&["A", "B"]), 1400);
        let old_only = Envelope::new("gw", &keys(&["A"]), 1400);
        let new_only = Envelope::new("gw", &keys(&["B"]), 1400);
        // Sealed with B: accepted by [A, B].
        assert!(rotating.open(&new_key_sender.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng())).is_ok());
        // [A, B] seals with A: accepted by [A], and by [B, A] later in the rotation.
        assert!(old_only.open(&rotating.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng())).is_ok());
        // [A]-only traffic is refused by a node that already dropped A.
        assert_eq!(
            new_only.open(&old_only.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng())).unwrap_err(),
            RejectReason::Auth
        );
    }

    #[test]
    fn open_packets_and_sealed_packets_do_not_mix() {
        let open = Envelope::new("gw", &[], 1400);
        let sealed = Envelope::new("gw", &keys(&["a"]), 1400);
        assert_eq!(sealed.open(&open.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng())).unwrap_err(), RejectReason::Auth);
        // A node without keys cannot check a seal, so it refuses it too.
        assert_eq!(open.open(&sealed.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng())).unwrap_err(), RejectReason::Auth);
    }

    #[test]
    fn another_cluster_is_refused() {
        for secrets in [keys(&[]), keys(&["a"])] {
            let ours = Envelope::new("gw", &secrets, 1400);
            let theirs = Envelope::new("other", &secrets, 1400);
            assert_eq!(
                ours.open(&theirs.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng())).unwrap_err(),
                RejectReason::Cluster
            );
        }
    }

    #[test]
    fn another_version_is_refused() {
        let envelope = Envelope::new("gw", &keys(&["a"]), 1400);
        let mut packet = envelope.seal(WIRE_VERSION, KIND_CORE, b"x", &mut rng());
        packet[0] = WIRE_VERSION + 1;
        assert_eq!(envelope.open(&packet).unwrap_err(), RejectReason::Version);
        packet[0] = OLDEST_WIRE_VERSION - 1;
        assert_eq!(envelope.open(&packet).unwrap_err(), RejectReason::Version);
        // The version before is taken, and said.
        let older = envelope.seal(OLDEST_WIRE_VERSION, KIND_CORE, b"x", &mut rng());
        assert_eq!(envelope.open(&older).unwrap().0, OLDEST_WIRE_VERSION);
        packet[0] = WIRE_VERSION;
        packet[1] = 9;
        assert_eq!(envelope.open(&packet).unwrap_err(), RejectReason::Version);
    }

    #[test]
    fn empty_and_truncated_are_refused() {
        for secrets in [keys(&[]), keys(&["a"])] {
            let envelope = Envelope::new("gw", &secrets, 1400);
            assert_eq!(envelope.open(&[]).unwrap_err(), RejectReason::Truncated);
            let packet = envelope.seal(WIRE_VERSION, KIND_CORE, b"payload", &mut rng());
            for cut in 1..packet.len() {
                match envelope.open(&packet[..cut]) {
                    // Cut inside the header (or before the body's kind byte): truncated.
                    Err(reason) if cut <= envelope.overhead() => {
                        assert_eq!(reason, RejectReason::Truncated, "cut {cut}")
                    }
                    // Cut inside a sealed body: the seal fails.
                    Err(reason) => assert_eq!(reason, RejectReason::Auth, "cut {cut}"),
                    // An open packet cannot tell; its body is shorter and fails to decode later
                    // (see the node's tests).
                    Ok((_, body)) => assert!(secrets.is_empty() && body.len() == cut - PREFIX_LEN, "cut {cut}"),
                }
            }
        }
    }

    #[test]
    fn oversized_is_refused() {
        let envelope = Envelope::new("gw", &keys(&["a"]), 600);
        let packet = envelope.seal(WIRE_VERSION, KIND_CORE, &[7u8; 700], &mut rng());
        assert_eq!(envelope.open(&packet).unwrap_err(), RejectReason::Oversized);
        assert_eq!(envelope.open(&vec![0u8; 100_000]).unwrap_err(), RejectReason::Oversized);
        let fits = envelope.seal(WIRE_VERSION, KIND_CORE, &vec![7u8; envelope.max_body() - 1], &mut rng());
        assert_eq!(fits.len(), 600);
        assert!(envelope.open(&fits).is_ok());
    }

    #[test]
    fn every_flipped_byte_of_a_sealed_packet_is_refused() {
        let envelope = Envelope::new("gw", &keys(&["a"]), 1400);
        let packet = envelope.seal(WIRE_VERSION, KIND_CORE, b"some body to garble", &mut rng());
        for i in 0..packet.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut garbled = packet.clone();
                garbled[i] ^= flip;
                let reason = envelope.open(&garbled).unwrap_err();
                let expected = match i {
                    0 => RejectReason::Version,
                    1 => RejectReason::Version,
                    2..=5 => RejectReason::Cluster,
                    _ => RejectReason::Auth,
                };
                // Flipping the mode byte 1 -> 0 makes an open packet, refused as auth.
                if i == 1 && garbled[1] == MODE_OPEN {
                    assert_eq!(reason, RejectReason::Auth);
                } else {
                    assert_eq!(reason, expected, "byte {i} ^ {flip:#x}");
                }
            }
        }
    }
}
