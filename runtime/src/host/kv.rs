//! `slmfn:agent/kv`: the function's key/value namespace under its quota
//! ([`crate::registry::KvNamespace`]), a thin adapter.

use crate::registry::{KvError, KvNamespace};
use crate::wit::slmfn::agent::kv::{self, Error, KeyPage};

/// The kv capability of one invocation.
pub(crate) struct KvCtx {
    pub(crate) namespace: KvNamespace,
}

fn wit(e: KvError) -> Error {
    match e {
        KvError::TooLarge(m) => Error::TooLarge(m),
        KvError::Io(m) => Error::Io(m),
    }
}

impl kv::Host for KvCtx {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.namespace.get(&key).map_err(wit)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.namespace.set(&key, &value).map_err(wit)
    }

    async fn delete(&mut self, key: String) -> Result<(), Error> {
        self.namespace.delete(&key).map_err(wit)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        self.namespace.list(&prefix).map_err(wit)
    }

    async fn list_keys_page(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, Error> {
        let page = self
            .namespace
            .list_page(&prefix, after.as_deref(), limit as usize)
            .map_err(wit)?;
        Ok(KeyPage {
            keys: page.keys,
            next: page.next,
        })
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        self.namespace.increment(&key, delta).map_err(wit)
    }
}
