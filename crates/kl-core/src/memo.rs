//! The in-memory memo of answers: the one place a process remembers what it
//! has already been told.
//!
//! Bounded by bytes (`KL_MEMO_BYTES`), least recently used answers leaving
//! first, and by time: an answer lives as long as it would in the
//! persistent cache (the data or the Grey lifetime), so a process that runs
//! for weeks asks again once an answer is stale. Only answers are kept
//! (data and "not found"); a failure is never remembered.

use std::time::Duration;

use kl_model::{Function, Indicator, Outcome};
use tokio::time::Instant;

/// What the memo is keyed by; the backend is the engine's own.
pub(crate) type Key = (Function, Indicator);

#[derive(Debug, Clone)]
struct Entry {
    outcome: Outcome,
    /// When the answer goes stale, on tokio's clock (which tests pause and
    /// advance). A stale entry is dropped when next asked for; one never
    /// asked for again still counts against the budget until the least
    /// recently used leave, so memory stays bounded either way.
    expires_at: Instant,
}

/// What one entry costs besides its indicator and answer text: the key and
/// entry structs, moka's bookkeeping (hash table slot, access-order queue)
/// and the allocator's. Measured with `cargo xtask bench --only memo`
/// (docs/performance.md), which this keeps the budget honest to.
pub(crate) const ENTRY_OVERHEAD: u32 = 600;

/// The memo; absent when its budget is 0.
#[derive(Debug)]
pub(crate) struct Memo {
    cache: Option<moka::sync::Cache<Key, Entry>>,
}

impl Memo {
    pub(crate) fn new(budget_bytes: u64) -> Memo {
        let cache = (budget_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|k: &Key, e: &Entry| {
                    // An answer's text, and room for one rendering of it
                    // (see `Body::rendering`), which is about as long.
                    let body = match &e.outcome {
                        Outcome::Data(b) => 2 * b.len(),
                        _ => 0,
                    };
                    (k.1.as_str().len() + body).min(u32::MAX as usize / 2) as u32 + ENTRY_OVERHEAD
                })
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build()
        });
        Memo { cache }
    }

    /// A fresh answer, if the memo holds one.
    pub(crate) fn get(&self, key: &Key) -> Option<Outcome> {
        let cache = self.cache.as_ref()?;
        let entry = cache.get(key)?;
        if Instant::now() >= entry.expires_at {
            cache.invalidate(key);
            return None;
        }
        Some(entry.outcome)
    }

    /// Remembers an answer for `ttl`; failures and skips are not answers
    /// and are never kept.
    pub(crate) fn insert(&self, key: Key, outcome: &Outcome, ttl: Duration) {
        let Some(cache) = &self.cache else { return };
        if !outcome.is_answer() || ttl.is_zero() {
            return;
        }
        cache.insert(key, Entry { outcome: outcome.clone(), expires_at: Instant::now() + ttl });
    }

    /// Answers held, and the bytes they are weighed at (after pending
    /// bookkeeping is done).
    pub(crate) fn usage(&self) -> (u64, u64) {
        match &self.cache {
            Some(c) => {
                c.run_pending_tasks();
                (c.entry_count(), c.weighted_size())
            }
            None => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_model::{Body, ObjectKind};

    fn key(ip: &str) -> Key {
        (Function::IpReport, Indicator::parse(ObjectKind::Ipv4, ip).unwrap())
    }

    fn data(n: usize) -> Outcome {
        Outcome::Data(Body::from(serde_json::json!({"Zone": "Red", "Pad": "x".repeat(n)})))
    }

    #[tokio::test(start_paused = true)]
    async fn answers_go_stale_after_their_lifetime() {
        let memo = Memo::new(1 << 20);
        memo.insert(key("8.8.8.8"), &data(10), Duration::from_secs(2));
        memo.insert(key("8.8.4.4"), &Outcome::NotFound, Duration::from_secs(1));
        assert_eq!(memo.get(&key("8.8.8.8")), Some(data(10)));
        assert_eq!(memo.get(&key("8.8.4.4")), Some(Outcome::NotFound));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(memo.get(&key("8.8.4.4")), None, "Grey answers live for the Grey lifetime");
        assert!(memo.get(&key("8.8.8.8")).is_some());
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(memo.get(&key("8.8.8.8")), None);
    }

    #[test]
    fn failures_and_skips_are_never_kept() {
        let memo = Memo::new(1 << 20);
        memo.insert(key("8.8.8.8"), &Outcome::Failed("HTTP 503".into()), Duration::from_secs(60));
        memo.insert(key("8.8.4.4"), &Outcome::Skipped("private".into()), Duration::from_secs(60));
        assert_eq!(memo.get(&key("8.8.8.8")), None);
        assert_eq!(memo.get(&key("8.8.4.4")), None);
        assert_eq!(memo.usage().0, 0);
    }

    #[test]
    fn the_memo_stays_within_its_byte_budget_and_keeps_the_recent() {
        let budget = 200_000;
        let memo = Memo::new(budget);
        for i in 0..5000u32 {
            let ip = format!("11.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            memo.insert(key(&ip), &data(100), Duration::from_secs(3600));
            // Touch an early entry now and then: it stays.
            let _ = memo.get(&key("11.0.0.0"));
        }
        let (count, weight) = memo.usage();
        assert!(weight <= budget, "{weight} > {budget}");
        assert!(count > 100 && count < 5000, "{count}");
        assert!(memo.get(&key("11.0.0.0")).is_some(), "a recently used answer was evicted");
        assert!(memo.get(&key("11.0.0.5")).is_none(), "an old unused answer was kept");
        let newest = format!("11.0.{}.{}", 4999 >> 8, 4999 & 255);
        assert!(memo.get(&key(&newest)).is_some());
    }

    #[test]
    fn a_zero_budget_turns_the_memo_off() {
        let memo = Memo::new(0);
        memo.insert(key("8.8.8.8"), &data(1), Duration::from_secs(60));
        assert_eq!(memo.get(&key("8.8.8.8")), None);
    }
}
