//! The in-memory memo of answers: the one place a process remembers what it
//! has already been told.
//!
//! Bounded by bytes (`KL_MEMO_BYTES`), least recently used answers leaving
//! first, and by time: an answer lives as long as it would in the
//! persistent cache (the data or the Grey lifetime), so a process that runs
//! for weeks asks again once an answer is stale. Only answers are kept
//! (data and "not found"); a failure is never remembered.

use std::sync::Mutex;
use std::time::Duration;

use kl_model::{Function, Indicator, Outcome};
use lru::LruCache;
use tokio::time::Instant;

/// What the memo is keyed by; the backend is the engine's own.
pub(crate) type Key = (Function, Indicator);

#[derive(Debug)]
struct Entry {
    outcome: Outcome,
    /// When the answer goes stale, on tokio's clock (which tests pause and
    /// advance). A stale entry is dropped when next asked for; one never
    /// asked for again still counts against the budget until it is the
    /// least recently used, so memory stays bounded either way.
    expires_at: Instant,
    /// What it is weighed at.
    weight: u64,
}

/// What one entry costs besides its indicator and the bytes its answer
/// holds: the key and entry structs, the LRU list node and hash table
/// slot, the answer's shared part (its packed text and rendering are
/// separate allocations), and the allocator's. Measured with
/// `cargo xtask bench --only memo --answer fixtures/responses/ip/39.90.148.83.json`
/// (docs/performance.md): 860 bytes an entry, of which the packed text
/// and rendering are about 180.
pub(crate) const ENTRY_OVERHEAD: u64 = 700;

/// An entry's weight: its indicator, what its answer holds (the packed
/// text, and a rendering once one is made: see [`Memo::reweigh`]), and
/// overhead.
fn weight(key: &Key, outcome: &Outcome) -> u64 {
    let body = match outcome {
        Outcome::Data(b) => b.held(),
        _ => 0,
    };
    (key.1.as_str().len() + body) as u64 + ENTRY_OVERHEAD
}

#[derive(Debug)]
struct Lru {
    map: LruCache<Key, Entry>,
    /// The sum of the entries' weights.
    weight: u64,
}

impl Lru {
    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.map.pop(key) {
            self.weight -= e.weight;
        }
    }

    /// Evicts the least recently used entries while over `budget`.
    fn shrink_to(&mut self, budget: u64) {
        while self.weight > budget {
            match self.map.pop_lru() {
                Some((_, e)) => self.weight -= e.weight,
                None => break,
            }
        }
    }
}

/// The memo; absent when its budget is 0.
#[derive(Debug)]
pub(crate) struct Memo {
    budget: u64,
    /// A std mutex: held for one map operation, never across an await.
    lru: Option<Mutex<Lru>>,
}

impl Memo {
    pub(crate) fn new(budget: u64) -> Memo {
        let lru = (budget > 0).then(|| Mutex::new(Lru { map: LruCache::unbounded(), weight: 0 }));
        Memo { budget, lru }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Lru>> {
        self.lru.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A fresh answer, if the memo holds one; it becomes the most recently used.
    pub(crate) fn get(&self, key: &Key) -> Option<Outcome> {
        let mut lru = self.lock()?;
        let entry = lru.map.get(key)?;
        if Instant::now() < entry.expires_at {
            return Some(entry.outcome.clone());
        }
        lru.remove(key);
        None
    }

    /// Remembers an answer for `ttl`, evicting the least recently used
    /// answers while the budget is exceeded. Failures and skips are not
    /// answers and are never kept.
    pub(crate) fn insert(&self, key: Key, outcome: &Outcome, ttl: Duration) {
        if !outcome.is_answer() || ttl.is_zero() {
            return;
        }
        let Some(mut lru) = self.lock() else { return };
        // Weighed under the lock: a rendering made meanwhile on another
        // thread is either counted here or by the `reweigh` that follows it.
        let weight = weight(&key, outcome);
        lru.remove(&key);
        if weight > self.budget {
            return;
        }
        let entry = Entry { outcome: outcome.clone(), expires_at: Instant::now() + ttl, weight };
        lru.map.put(key, entry);
        lru.weight += weight;
        lru.shrink_to(self.budget);
    }

    /// Weighs an entry again, after its answer grew a rendering, so that
    /// what renderings hold counts against the budget too.
    pub(crate) fn reweigh(&self, key: &Key) {
        let Some(mut lru) = self.lock() else { return };
        let Some(entry) = lru.map.peek_mut(key) else { return };
        let (old, new) = (entry.weight, weight(key, &entry.outcome));
        entry.weight = new;
        lru.weight = lru.weight - old + new;
        lru.shrink_to(self.budget);
    }

    /// Answers held, and the bytes they are weighed at.
    pub(crate) fn usage(&self) -> (u64, u64) {
        match self.lock() {
            Some(lru) => (lru.map.len() as u64, lru.weight),
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
        assert_eq!(memo.usage(), (0, 0), "stale entries leave when asked for");
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
            assert!(memo.usage().1 <= budget);
        }
        let (count, weight) = memo.usage();
        assert!(count > 100 && count < 5000, "{count}");
        assert!(weight > budget - 1000, "the budget is used: {weight}");
        assert!(memo.get(&key("11.0.0.0")).is_some(), "a recently used answer was evicted");
        assert!(memo.get(&key("11.0.0.5")).is_none(), "an old unused answer was kept");
        let newest = format!("11.0.{}.{}", 4999 >> 8, 4999 & 255);
        assert!(memo.get(&key(&newest)).is_some());
    }

    #[test]
    fn replacing_an_answer_reweighs_it() {
        let memo = Memo::new(1 << 20);
        memo.insert(key("8.8.8.8"), &data(1000), Duration::from_secs(60));
        let big = memo.usage().1;
        memo.insert(key("8.8.8.8"), &Outcome::NotFound, Duration::from_secs(60));
        let (count, small) = memo.usage();
        assert_eq!(count, 1);
        assert!(small < big);
        assert_eq!(small, weight(&key("8.8.8.8"), &Outcome::NotFound));
    }

    #[test]
    fn a_rendering_counts_once_the_entry_is_reweighed() {
        let memo = Memo::new(1 << 20);
        let answer = data(1000);
        memo.insert(key("8.8.8.8"), &answer, Duration::from_secs(60));
        let before = memo.usage().1;
        let Outcome::Data(body) = &answer else { unreachable!() };
        // Bytes that do not compress, so the rendering holds about 5,000
        // (other noise first, in case it becomes the dictionary).
        let noise = |mut x: u32| -> Vec<u8> {
            (0..5000)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect()
        };
        if let Outcome::Data(other) = data(20) {
            other.render_into(1, &mut Vec::new(), |_| noise(7));
        }
        let held_before = body.held();
        assert!(body.render_into(1, &mut Vec::new(), |_| noise(1)));
        memo.reweigh(&key("8.8.8.8"));
        let grown = body.held() - held_before;
        assert!(grown >= 5000, "{grown}");
        assert_eq!(memo.usage().1, before + grown as u64);
        // A rendering that no longer fits the budget pushes older answers out.
        let small = Memo::new(before + 4000);
        small.insert(key("8.8.4.4"), &Outcome::NotFound, Duration::from_secs(60));
        small.insert(key("8.8.8.8"), &answer, Duration::from_secs(60));
        small.reweigh(&key("8.8.8.8"));
        assert!(small.usage().1 <= before + 4000);
        assert_eq!(small.get(&key("8.8.8.8")), None, "an answer heavier than the budget is not kept");
    }

    #[test]
    fn a_zero_budget_turns_the_memo_off() {
        let memo = Memo::new(0);
        memo.insert(key("8.8.8.8"), &data(1), Duration::from_secs(60));
        assert_eq!(memo.get(&key("8.8.8.8")), None);
    }
}
