//! Cluster membership and cluster-wide messages for gateway nodes.
//!
//! Nodes find each other and keep a member list with SWIM (the `foca` crate) over UDP. They pass
//! each other [`Message`]s, which every node that stays up within a minute receives exactly once,
//! and keep a durable state table (last writer wins) that every node converges on, however long
//! it was away. Both carry bytes the user encodes: this crate knows no gateway terms.
//!
//! How the parts fit, from the wire up:
//! - `codec`: bincode 2 for everything on the wire (foca's headers and member updates, this
//!   crate's own frames); the wire version byte that starts every packet. `codec_v1`: the
//!   version before, still spoken to nodes not yet upgraded.
//! - `envelope`: the cluster tag and, with a keyring, XChaCha20-Poly1305 sealing of every packet;
//!   what fails is dropped and counted by reason ([`RejectReason`], [`Rejections`]).
//! - `identity`: a member's identity is new at every start, so a restarted node rejoins at once
//!   and replaces its previous self (one entry per node name).
//! - `messages`: the typed messages, their ids `(origin, boot, seq)`, dedupe, and the store the
//!   anti-entropy exchange works from. Kept a minute: for what may be missed.
//! - `query`: a question for every live member, their answers put together, and who did not
//!   answer in time.
//! - `state`: durable state, a last-writer-wins table every node converges on (push-pull with
//!   bucket digests): for what must reach every node, however long it was away.
//! - `members`: the member list as the gateway shows it ([`Member`], [`MemberState`]).
//! - `node`: [`Node`], the sans-IO core tying foca, codec, envelope and messages together; driven
//!   by packets and timers with the time passed in, so tests and simulations need no sockets.
//!   `node/suspicion.rs` explains how foca's `notify_down_members` trap is closed (a member that
//!   refutes a suspicion is never told it is down); `node/membership.rs` adds member lists and
//!   recent changes to the periodic exchange, so no member stays unaware of another for long.
//! - `worker` and `handle`: the tokio task that owns the socket, the timers and the node, and
//!   [`ClusterHandle`], what the gateway holds.
//!
//! ```no_run
//! # async fn example() -> Result<(), cluster::ClusterError> {
//! use cluster::{ClusterConfig, ClusterHandle, Message};
//!
//! let mut config = ClusterConfig::new("gw-1", "0.0.0.0:7946".parse().unwrap());
//! config.seeds = vec!["gw-2:7946".into(), "gw-3:7946".into()];
//! config.keys = vec!["a long random shared secret".into()];
//! let cluster = ClusterHandle::spawn(config).await?;
//! let mut messages = cluster.messages();
//! cluster.broadcast(Message(b"purge the cache".to_vec())).await?;
//! while let Some(delivered) = messages.recv().await {
//!     println!("{} #{}: {:?}", delivered.origin, delivered.seq, delivered.message);
//! }
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

mod codec;
mod codec_v1;
mod config;
mod counters;
mod envelope;
mod error;
mod handle;
mod identity;
mod members;
mod messages;
mod node;
mod query;
mod state;
mod worker;

pub use config::ClusterConfig;
pub use counters::{RejectReason, Rejections};
pub use error::ClusterError;
pub use handle::ClusterHandle;
pub use members::{Member, MemberState};
pub use messages::{Delivered, Message};
pub use node::{Node, NodeEvent, NodeTimer, Output, CONFIRM_ATTEMPTS};
pub use query::{AnswerPart, IncomingQuery, QueryResult, QUERIES_WAITING};
pub use state::{Hlc, StateChange, StateUpdate, Version};
