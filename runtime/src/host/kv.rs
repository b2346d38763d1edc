//! `slmfn:agent/kv`: the function's key/value namespace (a sled tree), a thin adapter.

use crate::wit::slmfn::agent::kv::{self, Error};

/// Longest key: keys are names, not data.
const MAX_KEY_BYTES: usize = 1024;
/// Largest value: kv holds agent memory, not blobs; sled keeps values inline in its log.
const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The kv capability of one invocation.
pub(crate) struct KvCtx {
    pub(crate) tree: sled::Tree,
}

fn io(e: sled::Error) -> Error {
    Error::Io(e.to_string())
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::TooLarge(format!(
            "key of {} bytes exceeds {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

impl kv::Host for KvCtx {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        check_key(&key)?;
        Ok(self.tree.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLarge(format!(
                "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        self.tree.insert(key, value).map_err(io)?;
        Ok(())
    }

    async fn delete(&mut self, key: String) -> Result<(), Error> {
        check_key(&key)?;
        self.tree.remove(key).map_err(io)?;
        Ok(())
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        self.tree
            .scan_prefix(prefix)
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(io)
            })
            .collect()
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        check_key(&key)?;
        let new = crate::registry::update_checked(&self.tree, &key, |old| {
            let current = match old {
                None => 0,
                Some(v) => i64::from_le_bytes(<[u8; 8]>::try_from(v).map_err(|_| {
                    Error::Io(format!(
                        "key {key:?} holds a value that is not an 8-byte counter"
                    ))
                })?),
            };
            Ok(Some(current.wrapping_add(delta).to_le_bytes().to_vec()))
        })
        .map_err(io)??;
        let bytes = new.expect("update_and_fetch always stores a value here");
        Ok(i64::from_le_bytes(
            <[u8; 8]>::try_from(bytes.as_ref()).expect("8 bytes"),
        ))
    }
}
