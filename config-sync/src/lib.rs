//! The gateway's config: the entity model, its validation, versioned snapshots, and the sources
//! config comes from.
//!
//! - [`model`]: Service, Route, Upstream, Target, Consumer and its credentials, and the plugin
//!   configs, with serde and the
//!   product contract's defaults; each entity validates itself and reports every problem with
//!   its path.
//! - [`Config`]: a whole config by name, with the checks that span entities (references).
//! - [`Snapshot`]: one immutable version of the config, with its version and hash; entities
//!   with dangling references are left out and listed.
//! - [`declarative`] and [`FileSource`]: the nested YAML format and the file it lives in.
//! - [`etcd`]: the key layout, the watching source that turns etcd into snapshots, and the
//!   writer behind the admin API, `gateway apply` and `gateway dump`.
//!
//! This crate does no proxying and knows nothing of the gateway; the gateway depends on it.

pub mod config;
pub mod declarative;
pub mod etcd;
pub mod file;
pub mod model;
pub mod snapshot;
pub mod validate;

pub use config::{Config, EntityRef};
pub use file::{FileSource, LoadError};
pub use model::Algorithm;
pub use snapshot::{ConfigError, Snapshot};
pub use validate::{Errors, FieldError};
