//! One consistent read of everything under a prefix: page by page, every page at the revision
//! of the first, so that the result is the prefix as it was at one moment however large it is.

use super::keys::prefix_end;
use etcd_client::{GetOptions, KeyValue, KvClient};
use std::time::Duration;

/// Keys per page.
const PAGE: i64 = 500;

/// Why the read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// etcd refused or could not be reached.
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    /// A page did not come within the timeout.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
}

/// Every key under `prefix` (which ends in `/`), and the revision they were read at.
pub async fn read_prefix(
    kv: &mut KvClient,
    prefix: &str,
    timeout: Duration,
) -> Result<(Vec<KeyValue>, i64), ReadError> {
    let end = prefix_end(prefix);
    let mut keys = Vec::new();
    let mut from = prefix.as_bytes().to_vec();
    let mut at = 0i64;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if at != 0 {
            options = options.with_revision(at);
        }
        let mut page = tokio::time::timeout(timeout, kv.get(from.clone(), Some(options)))
            .await
            .map_err(|_| ReadError::Timeout(timeout))??;
        if at == 0 {
            at = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let next = kvs.last().filter(|_| more).map(|last| {
            let mut key = last.key().to_vec();
            key.push(0);
            key
        });
        keys.extend(kvs);
        match next {
            Some(key) => from = key,
            None => return Ok((keys, at)),
        }
    }
}
