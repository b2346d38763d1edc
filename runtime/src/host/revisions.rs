//! The revision lifecycle: loading the current revisions at start, deploy (validate,
//! precompile, store, switch), rollback and delete, and the table of revisions serving now.

use std::sync::Arc;

use tokio::sync::Semaphore;
use uuid::Uuid;

use super::component::{self, Pre};
use super::tool_component;
use super::{Host, HostError, LoadedRevision, Result};
use crate::manifest::{Kind, Manifest};
use crate::registry::{NewRevision, RevisionRecord, sha256_hex};
use crate::tools::Grants;

impl Host {
    /// Loads the current revision of every function (artifacts are deserialized, not compiled,
    /// unless the engine changed). A function that fails to load is logged and skipped. Each
    /// is compiled outside the commit lock and installed under it only if it is still the
    /// current revision: a deploy or rollback during startup is never overwritten by the
    /// revision that was current before it.
    pub async fn load_all(&self) -> Result<usize> {
        let functions = self.registry.list_functions()?;
        let mut count = 0;
        for f in functions {
            let loaded = match self.load_revision(&f.name, f.current).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::error!(function = %f.name, error = %e, "cannot load function");
                    continue;
                }
            };
            let _guard = self.commit_lock.lock().await;
            match self.registry.function(&f.name) {
                Ok(now) if now.current == f.current => {
                    self.install(loaded);
                    count += 1;
                }
                // Deployed, rolled back or deleted meanwhile: that change installed its own.
                Ok(_) | Err(crate::registry::RegistryError::FunctionNotFound(_)) => {
                    tracing::debug!(function = %f.name, "changed during startup; not loading the old revision");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(count)
    }

    /// Validates, precompiles and stores a new revision, then makes it current. On any error
    /// nothing changes: the previous revision keeps serving.
    pub async fn deploy(
        &self,
        name: &str,
        manifest_text: &str,
        component: &[u8],
    ) -> Result<RevisionRecord> {
        crate::manifest::validate_name(name)?;
        let manifest = Manifest::parse(manifest_text)?;
        if manifest.name != name {
            return Err(HostError::NameMismatch {
                manifest: manifest.name,
                path: name.to_string(),
            });
        }
        if manifest.kind == Kind::Tool && self.toolbox.is_reserved(name) {
            return Err(HostError::InvalidComponent(format!(
                "{name:?} is the namespace of a tool provider the operator configured; deploy the tool component under another name"
            )));
        }
        self.check_memory(name, manifest.limits.memory_mb)?;
        component::check_binary(component)?;
        let sha = sha256_hex(component);
        let compiled = self.compile_cached(&sha, component).await?;
        let pre = component::pre_instantiate(&self.linker, &compiled, manifest.kind)?;
        // Loaded under a provisional record until the registry assigns the revision.
        let provisional = RevisionRecord {
            function: name.to_string(),
            revision: Uuid::nil(),
            created_at: String::new(),
            component_sha256: sha.clone(),
            component_size: component.len() as u64,
            manifest: manifest.clone(),
        };
        let candidate = self.loaded(provisional, pre)?;
        // A tool component's list is checked before it replaces anything: its schemas must
        // be usable.
        if manifest.kind == Kind::Tool {
            self.component_tools(&candidate)
                .await
                .map_err(|e| HostError::InvalidComponent(e.to_string()))?;
        }
        let _guard = self.commit_lock.lock().await;
        let record = self
            .registry
            .commit_revision(NewRevision {
                manifest: &manifest,
                component,
                component_sha256: &sha,
            })
            .await?;
        self.install(candidate.with_record(record.clone()));
        tracing::info!(function = name, revision = %record.revision, size = component.len(), "deployed");
        Ok(record)
    }

    /// Makes an earlier revision current (the one before the current when `revision` is None).
    /// The target is loaded before the registry moves, so a revision that cannot load leaves
    /// both the registry and what serves unchanged.
    pub async fn rollback(&self, name: &str, revision: Option<Uuid>) -> Result<RevisionRecord> {
        let _guard = self.commit_lock.lock().await;
        let target = self.registry.rollback_target(name, revision)?;
        let loaded = self.load_revision(name, target).await?;
        let record = self.registry.rollback(name, Some(target)).await?;
        self.install(loaded);
        tracing::info!(function = name, revision = %record.revision, "rolled back");
        Ok(record)
    }

    /// Deletes a function with its revisions and kv namespace.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        self.registry.delete(name).await?;
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.toolbox.unregister(name);
        tracing::info!(function = name, "deleted");
        Ok(())
    }

    /// The manifests of the agents serving now (not the tool components), sorted by name.
    pub fn agents(&self) -> Vec<Manifest> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut agents: Vec<Manifest> = loaded
            .values()
            .filter(|l| matches!(l.pre, Pre::Agent(_)))
            .map(|l| l.record.manifest.clone())
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        agents
    }

    /// The manifest of the agent `name` serving now (`None` for a tool component or no
    /// function).
    pub fn agent(&self, name: &str) -> Option<Manifest> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .get(name)
            .filter(|l| matches!(l.pre, Pre::Agent(_)))
            .map(|l| l.record.manifest.clone())
    }

    /// Whether the function is loaded and serving.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// The agents serving now for which `select` says `Some`, with what it said, in name order
    /// (the events' trigger match, without cloning manifests).
    pub fn subscribers<T>(&self, select: impl Fn(&Manifest) -> Option<T>) -> Vec<(String, T)> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut hits: Vec<(String, T)> = loaded
            .iter()
            .filter(|(_, l)| matches!(l.pre, Pre::Agent(_)))
            .filter_map(|(name, l)| select(&l.record.manifest).map(|t| (name.clone(), t)))
            .collect();
        hits.sort_by(|a, b| a.0.cmp(&b.0));
        hits
    }

    /// Loads a stored revision: artifact if it fits this engine, else recompile and re-cache.
    pub(super) async fn load_revision(&self, name: &str, revision: Uuid) -> Result<LoadedRevision> {
        let record = self.registry.revision(name, revision)?;
        let sha = record.component_sha256.clone();
        let bytes = self.registry.component(&sha)?.ok_or_else(|| {
            HostError::Internal(format!(
                "component {sha} of {name}/{revision} is missing from the registry"
            ))
        })?;
        let component = self.compile_cached(&sha, &bytes).await?;
        let pre = component::pre_instantiate(&self.linker, &component, record.manifest.kind)?;
        self.loaded(record, pre)
    }

    /// The component for `bytes`: from the cached artifact when usable, else compiled off the
    /// async workers and the artifact cached.
    pub(super) async fn compile_cached(
        &self,
        sha: &str,
        bytes: &[u8],
    ) -> Result<wasmtime::component::Component> {
        if let Some(artifact) = self.registry.artifact(sha, &self.engine_key)? {
            let engine = self.engine.clone();
            let loaded =
                tokio::task::spawn_blocking(move || component::deserialize(&engine, &artifact))
                    .await
                    .map_err(|e| HostError::Internal(e.to_string()))?;
            if let Some(c) = loaded {
                return Ok(c);
            }
        }
        let _permit = self
            .compile_permits
            .acquire()
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        self.compilations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(component = sha, "compiling component");
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        let artifact = tokio::task::spawn_blocking(move || component::precompile(&engine, &owned))
            .await
            .map_err(|e| HostError::Internal(e.to_string()))??;
        let component = component::deserialize(&self.engine, &artifact).ok_or_else(|| {
            HostError::Internal("freshly precompiled artifact does not load".into())
        })?;
        self.registry
            .put_artifact(sha, &self.engine_key, &artifact)?;
        Ok(component)
    }

    pub(super) fn loaded(&self, record: RevisionRecord, pre: Pre) -> Result<LoadedRevision> {
        let limits = &record.manifest.limits;
        Ok(LoadedRevision {
            kv: self.registry.kv_namespace(
                &record.function,
                crate::registry::KvQuota {
                    max_keys: limits.kv_max_keys,
                    max_bytes: limits.kv_max_bytes,
                },
            )?,
            slots: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            waiting: Default::default(),
            env: record
                .manifest
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            grants: Arc::new(Grants::new(&record.manifest.tools.allowed)),
            tools: tokio::sync::OnceCell::new(),
            models: Arc::new(record.manifest.models.clone()),
            pre,
            record,
        })
    }

    pub(super) fn install(&self, loaded: LoadedRevision) {
        let name = loaded.record.function.clone();
        match loaded.pre {
            Pre::Tool(_) => {
                let provider = tool_component::ComponentTools::new(&name, self.me.clone());
                if let Err(e) = self.toolbox.register(Arc::new(provider)) {
                    tracing::error!(function = %name, error = %e, "cannot offer the tool component's tools");
                }
            }
            Pre::Agent(_) => self.toolbox.unregister(&name),
        }
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Arc::new(loaded));
    }
}

impl LoadedRevision {
    /// The same revision under the record the registry committed.
    fn with_record(mut self, record: RevisionRecord) -> Self {
        self.record = record;
        self
    }
}
