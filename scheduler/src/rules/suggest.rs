//! "did you mean ...?" for misspelt keys.

/// The known key closest to `typed`, if one is close enough to be a likely typo: within an
/// edit distance of a third of its length (at least 2), ignoring case, or one that `typed`
/// is the start of (`parallel` → `parallelism`).
pub(super) fn closest<'k>(typed: &str, known: &[&'k str]) -> Option<&'k str> {
    let typed_lower = typed.to_lowercase();
    known
        .iter()
        .filter_map(|&k| {
            let d = distance(&typed_lower, k);
            let close = d <= (k.chars().count() / 3).max(2)
                || (typed_lower.chars().count() >= 4 && k.starts_with(&typed_lower));
            close.then_some((d, k))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Damerau–Levenshtein distance (optimal string alignment) over chars.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j]; three rows kept for transpositions.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE_KEYS: &[&str] = &["projects", "targets", "configurations", "run-on"];

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("run_on", "run-on"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("tagrets", "targets"), 1, "a swap is one edit");
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(closest("run_on", RULE_KEYS), Some("run-on"));
        assert_eq!(closest("Projects", RULE_KEYS), Some("projects"));
        assert_eq!(closest("tagrets", RULE_KEYS), Some("targets"));
        assert_eq!(closest("config", RULE_KEYS), Some("configurations"));
        assert_eq!(
            closest("parallel", &["agent", "parallelism"]),
            Some("parallelism")
        );
        assert_eq!(closest("colour", RULE_KEYS), None);
        assert_eq!(closest("x", RULE_KEYS), None);
    }
}
