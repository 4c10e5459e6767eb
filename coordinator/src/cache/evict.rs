//! Which entries to evict: everything older than the maximum age, then the least recently
//! used (the oldest `modified` time) until the total fits the maximum size.

use std::time::{Duration, SystemTime};

use super::EntryMeta;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictionPolicy {
    /// Keep the cache under this many bytes.
    pub max_total_bytes: Option<u64>,
    /// Evict entries not used (local) or not written (S3) for this long.
    pub max_age: Option<Duration>,
}

impl EvictionPolicy {
    pub fn is_unbounded(&self) -> bool {
        self.max_total_bytes.is_none() && self.max_age.is_none()
    }
}

/// Indexes into `entries` of those to delete under `policy` at `now`.
pub fn choose_evictions(
    entries: &[EntryMeta],
    policy: &EvictionPolicy,
    now: SystemTime,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    // Oldest first; the key breaks ties so the choice is deterministic.
    order.sort_by(|&a, &b| {
        (entries[a].modified, &entries[a].key).cmp(&(entries[b].modified, &entries[b].key))
    });
    let mut doomed = Vec::new();
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    for i in order {
        let e = &entries[i];
        let too_old = policy
            .max_age
            .is_some_and(|max| now.duration_since(e.modified).is_ok_and(|age| age > max));
        let too_big = policy.max_total_bytes.is_some_and(|max| total > max);
        if too_old || too_big {
            total -= e.size;
            doomed.push(i);
        }
    }
    doomed.sort_unstable();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, size: u64, secs_ago: u64, now: SystemTime) -> EntryMeta {
        EntryMeta {
            key: key.to_string(),
            size,
            modified: now - Duration::from_secs(secs_ago),
        }
    }

    #[test]
    fn evicts_by_age_then_oldest_first_until_it_fits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let entries = vec![
            entry("new", 10, 1, now),
            entry("ancient", 10, 5000, now),
            entry("old", 30, 100, now),
            entry("middle", 20, 50, now),
        ];
        let by_age = EvictionPolicy {
            max_total_bytes: None,
            max_age: Some(Duration::from_secs(3600)),
        };
        assert_eq!(choose_evictions(&entries, &by_age, now), vec![1]);
        let by_size = EvictionPolicy {
            max_total_bytes: Some(35),
            max_age: None,
        };
        // 70 bytes: drop ancient (60), old (30) -> fits.
        assert_eq!(choose_evictions(&entries, &by_size, now), vec![1, 2]);
        let both = EvictionPolicy {
            max_total_bytes: Some(10),
            max_age: Some(Duration::from_secs(3600)),
        };
        assert_eq!(choose_evictions(&entries, &both, now), vec![1, 2, 3]);
        assert!(choose_evictions(&entries, &EvictionPolicy::default(), now).is_empty());
        let empty = EvictionPolicy {
            max_total_bytes: Some(0),
            max_age: None,
        };
        assert_eq!(choose_evictions(&entries, &empty, now).len(), 4);
    }
}
