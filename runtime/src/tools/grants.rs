//! Which tools a caller may see and call: the patterns of a function's `[tools] allowed`.

use wildmatch::WildMatch;

/// A set of tool-name patterns: exact names (`clock.now`) or globs where `*` matches any run
/// of characters and `?` one (`github.*`, `*`).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    patterns: Vec<WildMatch>,
}

impl Grants {
    /// Grants from manifest patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        Self {
            patterns: patterns
                .iter()
                .map(|p| WildMatch::new(p.as_ref()))
                .collect(),
        }
    }

    /// Every tool: the `/mcp` server's view for an authenticated client.
    pub fn all() -> Self {
        Self::new(&["*"])
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the tool `name` (`provider.tool`) is granted.
    pub fn allows(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_exact_names() {
        let grants = Grants::new(&["github.*", "clock.now"]);
        assert!(grants.allows("github.issues"));
        assert!(grants.allows("clock.now"));
        assert!(!grants.allows("clock.sleep"));
        assert!(!grants.allows("githubx.issues"));
        assert!(!grants.allows("http.fetch"));
        assert!(Grants::all().allows("anything.at_all"));
        assert!(!Grants::default().allows("clock.now"));
    }
}
