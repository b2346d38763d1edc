//! A function's key/value namespace (`kv/<name>`) with its quota: at most so many keys and so
//! many bytes (keys plus values) per function, from the manifest. What a namespace holds is
//! counted in `kv-usage` (`name` → keys and bytes, 16 bytes little-endian), updated in the
//! same sled transaction as every write, so the count never drifts from the data, whatever
//! writes run at once or crash. A write past the quota is refused and changes nothing; deletes
//! always pass.
//!
//! Listing is bounded too: one page at most [`MAX_PAGE`] keys, with a cursor for the next.

use std::ops::Bound;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{Registry, Result};

/// Longest key: keys are names, not data.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value: kv holds agent memory, not blobs; sled keeps values inline in its log.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys in one listing (one page).
pub const MAX_PAGE: usize = 1000;

/// What a function may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Keys at most.
    pub max_keys: u64,
    /// Bytes of keys and values at most.
    pub max_bytes: u64,
}

/// What a namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// Why a kv operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A key or value past its size limit, or a write past the quota.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed, or a value is not what the operation needs.
    #[error("{0}")]
    Io(String),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, sorted.
    pub keys: Vec<String>,
    /// Where the next page starts (pass as `after`); `None` on the last page.
    pub next: Option<String>,
}

/// A function's namespace under its quota.
#[derive(Clone)]
pub struct KvNamespace {
    data: sled::Tree,
    usage: sled::Tree,
    function: String,
    quota: KvQuota,
}

impl Registry {
    /// The namespace of `name` under `quota`. A namespace without a usage record (written
    /// before quotas existed) is counted once here.
    pub fn kv_namespace(&self, name: &str, quota: KvQuota) -> Result<KvNamespace> {
        let data = self.kv(name)?;
        if self.kv_usage.get(name)?.is_none() {
            let mut usage = KvUsage::default();
            for item in data.iter() {
                let (k, v) = item?;
                usage.keys += 1;
                usage.bytes += (k.len() + v.len()) as u64;
            }
            self.kv_usage
                .compare_and_swap(name, None as Option<&[u8]>, Some(encode_usage(usage)))?
                .ok();
        }
        Ok(KvNamespace {
            data,
            usage: self.kv_usage.clone(),
            function: name.to_string(),
            quota,
        })
    }
}

fn encode_usage(u: KvUsage) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&u.keys.to_le_bytes());
    out.extend_from_slice(&u.bytes.to_le_bytes());
    out
}

fn decode_usage(v: Option<&[u8]>) -> KvUsage {
    match v {
        Some(v) if v.len() == 16 => KvUsage {
            keys: u64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
            bytes: u64::from_le_bytes(v[8..].try_into().expect("8 bytes")),
        },
        _ => KvUsage::default(),
    }
}

fn io(e: impl std::fmt::Display) -> KvError {
    KvError::Io(e.to_string())
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::TooLarge(format!(
            "key of {} bytes exceeds {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<KvError>>;

impl KvNamespace {
    /// What the namespace holds now.
    pub fn usage(&self) -> Result<KvUsage, KvError> {
        Ok(decode_usage(
            self.usage.get(&self.function).map_err(io)?.as_deref(),
        ))
    }

    /// Reads a key.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(self.data.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    /// Writes a key, within the quota.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::TooLarge(format!(
                "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        self.write(key, |_| Ok(Some(value.to_vec()))).map(drop)
    }

    /// Deletes a key; no error when absent.
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.write(key, |_| Ok(None)).map(drop)
    }

    /// Adds `delta` to the little-endian i64 counter at `key` (absent = 0); the new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        let stored = self.write(key, |old| {
            let current = match old {
                None => 0,
                Some(v) => i64::from_le_bytes(<[u8; 8]>::try_from(v).map_err(|_| {
                    KvError::Io(format!(
                        "key {key:?} holds a value that is not an 8-byte counter"
                    ))
                })?),
            };
            Ok(Some(current.wrapping_add(delta).to_le_bytes().to_vec()))
        })?;
        let bytes = stored.expect("an increment always stores a value");
        Ok(i64::from_le_bytes(
            <[u8; 8]>::try_from(bytes.as_slice()).expect("8 bytes"),
        ))
    }

    /// The keys starting with `prefix`, sorted; refused past [`MAX_PAGE`] (page with
    /// [`KvNamespace::list_page`]).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let page = self.list_page(prefix, None, MAX_PAGE)?;
        if page.next.is_some() {
            return Err(KvError::TooLarge(format!(
                "more than {MAX_PAGE} keys start with {prefix:?}; list them a page at a time (list-keys-page)"
            )));
        }
        Ok(page.keys)
    }

    /// At most `limit` (1 to [`MAX_PAGE`]) keys starting with `prefix` that sort after
    /// `after`, and the cursor of the next page.
    pub fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let start = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => Bound::Excluded(a.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for item in self.data.range::<&[u8], _>((start, Bound::Unbounded)) {
            let (k, _) = item.map_err(io)?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(String::from_utf8_lossy(&k).into_owned());
        }
        let next = more.then(|| keys.last().cloned()).flatten();
        Ok(KeyPage { keys, next })
    }

    /// Replaces the value at `key` with what `f` makes of the old one (`None` removes it), and
    /// the usage with it, in one transaction; refused when the result passes the quota.
    fn write(
        &self,
        key: &str,
        f: impl Fn(Option<&[u8]>) -> Result<Option<Vec<u8>>, KvError>,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let outcome = (&self.data, &self.usage).transaction(
            |(data, usage): &(TransactionalTree, TransactionalTree)| -> TxResult<_> {
                let old = data.get(key)?;
                let new = f(old.as_deref()).map_err(ConflictableTransactionError::Abort)?;
                let mut held = decode_usage(usage.get(&self.function)?.as_deref());
                let size = |v: &[u8]| (key.len() + v.len()) as u64;
                let old_size = old.as_deref().map_or(0, size);
                if old.is_some() {
                    held.keys = held.keys.saturating_sub(1);
                    held.bytes = held.bytes.saturating_sub(old_size);
                }
                if let Some(new) = &new {
                    held.keys += 1;
                    held.bytes += size(new);
                    // A write that adds nothing passes even over a lowered quota.
                    if old.is_none() && held.keys > self.quota.max_keys {
                        return Err(ConflictableTransactionError::Abort(KvError::TooLarge(
                            format!(
                                "the function's kv quota of {} keys is full (limits.kv_max_keys)",
                                self.quota.max_keys
                            ),
                        )));
                    }
                    if size(new) > old_size && held.bytes > self.quota.max_bytes {
                        return Err(ConflictableTransactionError::Abort(KvError::TooLarge(
                            format!(
                                "the write would pass the function's kv quota of {} bytes (limits.kv_max_bytes)",
                                self.quota.max_bytes
                            ),
                        )));
                    }
                    data.insert(key, new.as_slice())?;
                } else if old.is_some() {
                    data.remove(key)?;
                }
                usage.insert(self.function.as_bytes(), encode_usage(held))?;
                Ok(new)
            },
        );
        outcome.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => io(e),
        })
    }
}
