//! Config in etcd: the key layout, the key space that turns keys into snapshots, the watching
//! source, and the writer used by the admin API, `gateway apply` and `gateway dump`.

mod backoff;
pub mod keys;
pub mod keyspace;
mod read;
mod watcher;
mod writer;

pub use backoff::Backoff;
pub use keys::{normalize_prefix, EntityKey};
pub use keyspace::{parse_entity, parse_submitted, Entity, KeySpace};
pub use watcher::{Connection, EtcdConfig, EtcdSource, EtcdStatus, EtcdTls, EtcdUser};
pub use writer::{desired_keys, ApplyReport, Deleted, EtcdWriter, StoredKey, WriteError};
