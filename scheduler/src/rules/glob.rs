//! Nx's glob dialect for project, target and configuration names.
//!
//! - `*` matches zero or more characters, `?` exactly one character;
//! - a leading `!` negates the whole pattern (`!prod` matches every name but `prod`);
//! - every other character, `[` and `{` included, stands for itself.
//!
//! A property is a list of entries that are OR'ed ([`GlobList`]); one entry may hold
//! comma-separated globs that are AND'ed ([`GlobEntry`]): `e2e-ci*,*server-test`.
//!
//! Matching is the classic two-pointer wildcard walk that backtracks only to the last `*`:
//! at worst `O(pattern × name)`, never exponential.

use std::fmt;

/// One pattern, e.g. `e2e-ci*` or `!prod`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    text: String,
    negated: bool,
    tokens: Vec<Token>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyOne,
    AnyRun,
}

impl Glob {
    pub fn new(text: &str) -> Glob {
        let (negated, pattern) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let token = match c {
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                c => Token::Char(c),
            };
            // `**` means the same as `*`; keeping one keeps the walk simple.
            if !(token == Token::AnyRun && tokens.last() == Some(&Token::AnyRun)) {
                tokens.push(token);
            }
        }
        Glob {
            text: text.to_string(),
            negated,
            tokens,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        wildcard(&self.tokens, name) != self.negated
    }
}

/// Whether `name` matches the pattern `tokens` as a whole.
fn wildcard(tokens: &[Token], name: &str) -> bool {
    let mut t = 0; // next token
    let mut n = 0; // byte offset of the next char of `name`
    // After the last `*` seen: the token after it and where its run currently ends.
    let mut resume: Option<(usize, usize)> = None;
    while let Some(c) = name[n..].chars().next() {
        match tokens.get(t) {
            Some(Token::AnyRun) => {
                resume = Some((t + 1, n));
                t += 1;
                continue;
            }
            Some(Token::AnyOne) => {
                t += 1;
                n += c.len_utf8();
                continue;
            }
            Some(Token::Char(want)) if *want == c => {
                t += 1;
                n += c.len_utf8();
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more char, or fail.
        let Some((after_star, run_end)) = resume else {
            return false;
        };
        let Some(swallowed) = name[run_end..].chars().next() else {
            return false;
        };
        let run_end = run_end + swallowed.len_utf8();
        resume = Some((after_star, run_end));
        t = after_star;
        n = run_end;
    }
    tokens[t..].iter().all(|token| *token == Token::AnyRun)
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One list entry: comma-separated globs that must all match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobEntry {
    text: String,
    all: Vec<Glob>,
}

impl GlobEntry {
    /// Splits `text` at commas. Whitespace around each glob is dropped (names in an Nx
    /// workspace have none). An empty glob (`''`, `lint,`) is refused: it could only match an
    /// empty name, which is never what was meant.
    pub fn parse(text: &str) -> Result<GlobEntry, String> {
        let all: Vec<Glob> = text.split(',').map(|g| Glob::new(g.trim())).collect();
        if text.trim().is_empty() {
            return Err("empty glob".to_string());
        }
        if all.iter().any(|g| g.as_str().is_empty()) {
            return Err(format!("empty glob in `{text}` (a stray comma?)"));
        }
        Ok(GlobEntry {
            text: text.to_string(),
            all,
        })
    }

    pub fn globs(&self) -> &[Glob] {
        &self.all
    }

    pub fn matches(&self, name: &str) -> bool {
        self.all.iter().all(|g| g.matches(name))
    }
}

impl fmt::Display for GlobEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A property's list of entries, any one of which may match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobList {
    any: Vec<GlobEntry>,
}

impl GlobList {
    pub fn new(entries: Vec<GlobEntry>) -> GlobList {
        GlobList { any: entries }
    }

    /// Parses each entry; the first bad entry's message on failure.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<GlobList, String> {
        let any = entries
            .into_iter()
            .map(GlobEntry::parse)
            .collect::<Result<_, _>>()?;
        Ok(GlobList { any })
    }

    pub fn entries(&self) -> &[GlobEntry] {
        &self.any
    }

    pub fn matches(&self, name: &str) -> bool {
        self.any.iter().any(|e| e.matches(name))
    }
}

/// `lint`, or `lint or build` for several entries.
impl fmt::Display for GlobList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.any.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p)
    }

    /// The ✅ and ❌ examples of the reference's glob section, one assertion each.
    #[test]
    fn star_matches_zero_or_more_characters() {
        for name in ["lint-js", "linting-test"] {
            assert!(glob("lint*").matches(name), "lint* should match {name}");
        }
        for name in ["business-test-2", "test-12", "10-test"] {
            assert!(glob("*test*").matches(name), "*test* should match {name}");
        }
        for name in ["eslint", "lin-test", "lin"] {
            assert!(
                !glob("lint*").matches(name),
                "lint* should not match {name}"
            );
        }
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        for name in ["app1", "app3", "apps"] {
            assert!(glob("app?").matches(name), "app? should match {name}");
        }
        for name in ["app10", "apps1", "bus-app1"] {
            assert!(!glob("app?").matches(name), "app? should not match {name}");
        }
    }

    #[test]
    fn leading_bang_negates() {
        for name in ["development", "staging"] {
            assert!(glob("!prod").matches(name), "!prod should match {name}");
        }
        assert!(!glob("!prod").matches("prod"));
    }

    #[test]
    fn bang_elsewhere_and_brackets_are_literal() {
        assert!(glob("a!b").matches("a!b"));
        assert!(!glob("a!b").matches("ab"));
        assert!(glob("app[1]").matches("app[1]"));
        assert!(!glob("app[1]").matches("app1"));
        assert!(
            glob("!!x").matches("x"),
            "`!!x` is not `!x`: it matches names other than `!x`"
        );
        assert!(!glob("!!x").matches("!x"));
    }

    #[test]
    fn star_backtracks_to_the_last_star_only() {
        assert!(glob("*a*b*c").matches("xxaxxbxxbxxc"));
        assert!(glob("a*b").matches("ab"));
        assert!(glob("a*b").matches("abbb"));
        assert!(!glob("a*b").matches("abba"));
        assert!(glob("*").matches(""));
        assert!(glob("**").matches("anything"));
        assert!(!glob("?").matches(""));
        assert!(
            glob("é?").matches("éü"),
            "`?` is one character, not one byte"
        );
        // Long runs of stars stay fast.
        let name = "a".repeat(2000);
        let pattern = format!("{}b", "a*".repeat(500));
        assert!(!glob(&pattern).matches(&name));
    }

    #[test]
    fn comma_entries_need_every_glob() {
        let entry = GlobEntry::parse("e2e-ci*,*server-test").unwrap();
        assert!(entry.matches("e2e-ci--playwright-server-test"));
        assert!(!entry.matches("e2e-ci--playwright-button-test"));
        assert!(!entry.matches("api-server-test"));
        let lint_and_build = GlobEntry::parse("lint,build").unwrap();
        assert!(!lint_and_build.matches("lint"));
        assert!(!lint_and_build.matches("build"));
        let spaced = GlobEntry::parse("e2e-ci*, !*-slow").unwrap();
        assert!(spaced.matches("e2e-ci-fast"));
        assert!(!spaced.matches("e2e-ci-slow"));
    }

    #[test]
    fn list_entries_need_any_one() {
        let list = GlobList::parse(["e2e-ci*", "lint*"]).unwrap();
        assert!(list.matches("e2e-ci--playwright-button-test"));
        assert!(list.matches("lint-js"));
        assert!(!list.matches("build"));
        assert_eq!(list.to_string(), "e2e-ci* or lint*");
    }

    #[test]
    fn empty_globs_are_refused() {
        assert_eq!(GlobEntry::parse("").unwrap_err(), "empty glob");
        assert_eq!(GlobEntry::parse("  ").unwrap_err(), "empty glob");
        assert_eq!(
            GlobEntry::parse("lint,").unwrap_err(),
            "empty glob in `lint,` (a stray comma?)"
        );
    }
}
