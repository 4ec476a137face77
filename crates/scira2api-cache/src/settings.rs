//! The cache section of the gateway's settings, with its defaults (one place for them).

use crate::{MemoryResponses, MemoryStore, ResponseObjects, ResponseStore};
use std::sync::Arc;
use std::time::Duration;

/// Whether the response cache is shared by all clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// One cache for everyone: identical requests from different keys share answers.
    Shared,
    /// Answers are kept per API key (clients never see each other's answers).
    PerKey,
}

/// Caching as configured (`CACHE_ENABLED`, `MODEL_CACHE_TTL`, `RESP_CACHE_TTL`,
/// `CACHE_MAX_ENTRIES`, `CACHE_MAX_BYTES`, `CACHE_SCOPE`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Response and model-list caching on/off.
    pub enabled: bool,
    /// Model list lifetime.
    pub model_ttl: Duration,
    /// Answer lifetime.
    pub answer_ttl: Duration,
    /// Most answers kept.
    pub max_entries: u64,
    /// About how many bytes the answers may take.
    pub max_bytes: u64,
    /// Shared by all clients or kept per API key.
    pub scope: CacheScope,
    /// How long a stored Responses API response is kept (`RESPONSES_STORE_TTL`; it is state,
    /// not cache: `CACHE_ENABLED` does not turn it off).
    pub responses_ttl: Duration,
    /// Most stored responses (`RESPONSES_STORE_MAX_ENTRIES`).
    pub responses_max_entries: u64,
    /// About how many bytes stored responses may take (`RESPONSES_STORE_MAX_BYTES`).
    pub responses_max_bytes: u64,
    /// Answers kept in this process in front of a shared cache (`CACHE_FRONT_ENTRIES`; 0: none).
    pub front_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            model_ttl: Duration::from_secs(3600),
            answer_ttl: Duration::from_secs(300),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            scope: CacheScope::Shared,
            responses_ttl: Duration::from_secs(3600),
            responses_max_entries: 10_000,
            responses_max_bytes: 64 * 1024 * 1024,
            front_entries: 0,
        }
    }
}

impl CacheSettings {
    /// The in-memory answer store these settings describe, or `None` when caching is off.
    pub fn memory_store(&self) -> Option<Arc<dyn ResponseStore>> {
        self.enabled.then(|| {
            Arc::new(MemoryStore::new(
                self.answer_ttl,
                self.max_entries,
                self.max_bytes,
            )) as Arc<dyn ResponseStore>
        })
    }

    /// The in-memory store of Responses API responses these settings describe.
    pub fn memory_responses(&self) -> Arc<dyn ResponseObjects> {
        Arc::new(MemoryResponses::new(
            self.responses_ttl,
            self.responses_max_entries,
            self.responses_max_bytes,
        ))
    }
}
