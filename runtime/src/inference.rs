//! The async face of the warm model pool, shared by the runtime's adapters (the WIT
//! `inference` interface, later the OpenAI-compatible API).
//!
//! The pool runs generation on its own worker threads and reports through callbacks; this
//! module turns that into channels a tokio task can await, never blocking an async worker.
//! Dropping a [`Generation`] cancels it (the caller went away).

use std::sync::Arc;
use std::time::Instant;

use slmfn_models::{CancelToken, Completion, Job, ModelPool, Prompt, SamplingParams};
use tokio::sync::{mpsc, oneshot};

pub use slmfn_models::Error as ModelError;

/// The process-wide inference service.
pub struct Inference {
    pool: Arc<ModelPool>,
    /// The model used when neither the call nor the manifest names one.
    default_model: Option<String>,
}

/// A generation in progress: its text chunks and its final result.
pub struct Generation {
    chunks: mpsc::UnboundedReceiver<String>,
    done: Option<oneshot::Receiver<Result<Completion, ModelError>>>,
    model: String,
    cancel: CancelToken,
}

impl Inference {
    /// Wraps a pool.
    pub fn new(pool: Arc<ModelPool>, default_model: Option<String>) -> Self {
        Self {
            pool,
            default_model,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<ModelPool> {
        &self.pool
    }

    /// The runtime's default model.
    pub fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// Whether the pool has a model by this name.
    pub fn has_model(&self, model: &str) -> bool {
        self.pool.spec(model).is_ok()
    }

    /// The model's default sampling parameters.
    pub fn defaults(&self, model: &str) -> Result<SamplingParams, ModelError> {
        Ok(self.pool.spec(model)?.defaults.clone())
    }

    /// Queues a generation. Fails at once with `ModelNotFound` or `Overloaded`; later errors
    /// arrive through [`Generation::finish`]. The generation stops at `deadline`.
    pub fn start(
        &self,
        model: &str,
        prompt: Prompt,
        params: SamplingParams,
        deadline: Option<Instant>,
    ) -> Result<Generation, ModelError> {
        let cancel = deadline.map_or_else(CancelToken::new, CancelToken::with_deadline);
        let (chunk_tx, chunks) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        self.pool.submit(
            model,
            Job {
                prompt,
                params: Some(params),
                cancel: cancel.clone(),
                on_chunk: Box::new(move |chunk| {
                    let _ = chunk_tx.send(chunk.to_string());
                }),
                on_done: Box::new(move |result| {
                    let _ = done_tx.send(result);
                }),
            },
        )?;
        Ok(Generation {
            chunks,
            done: Some(done),
            model: model.to_string(),
            cancel,
        })
    }
}

impl Generation {
    /// The next chunk of text, or `None` when the generation is over.
    pub async fn next_chunk(&mut self) -> Option<String> {
        self.chunks.recv().await
    }

    /// Waits for the final result (the chunks need not have been read).
    pub async fn finish(&mut self) -> Result<Completion, ModelError> {
        let done = self.done.take().ok_or_else(|| {
            ModelError::InvalidInput("the generation's result was already taken".into())
        })?;
        done.await
            .unwrap_or_else(|_| Err(ModelError::ShuttingDown(self.model.clone())))
    }

    /// Whether the deadline given to [`Inference::start`] has passed.
    pub fn deadline_passed(&self) -> bool {
        self.cancel.deadline_passed()
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Harmless once finished; stops the worker when the caller gave up early.
        self.cancel.cancel();
    }
}
