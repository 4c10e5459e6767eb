//! Bearer tokens: one read-write, one read-only.

/// What a request's token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// The access an `Authorization` header grants, `None` for a missing or unknown token.
pub fn access(
    authorization: Option<&str>,
    token: Option<&str>,
    read_token: Option<&str>,
) -> Option<Access> {
    let presented = authorization?.trim();
    let (scheme, value) = presented.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if token.is_some_and(|t| same(t, value)) {
        Some(Access::ReadWrite)
    } else if read_token.is_some_and(|t| same(t, value)) {
        Some(Access::Read)
    } else {
        None
    }
}

/// Compares without stopping at the first differing byte.
fn same(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (*x ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_scope() {
        let rw = Some("write-secret");
        let ro = Some("read-secret");
        assert_eq!(
            access(Some("Bearer write-secret"), rw, ro),
            Some(Access::ReadWrite)
        );
        assert_eq!(
            access(Some("bearer read-secret"), rw, ro),
            Some(Access::Read)
        );
        assert_eq!(access(Some("Bearer nope"), rw, ro), None);
        assert_eq!(access(Some("Bearer write-secre"), rw, ro), None);
        assert_eq!(access(Some("Bearer write-secrets"), rw, ro), None);
        assert_eq!(access(Some("Basic write-secret"), rw, ro), None);
        assert_eq!(access(Some("Bearer "), rw, ro), None);
        assert_eq!(access(None, rw, ro), None);
        assert_eq!(access(Some("Bearer read-secret"), rw, None), None);
    }
}
