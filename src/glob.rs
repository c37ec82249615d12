//! The one pattern language of the config: `*` matches any run of characters. Used by route
//! policies, per-tool limits and metric labels alike (a leaf module, so each can use it).

/// A pattern where `*` matches any run of characters (including none); all else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A glob from its text.
    pub fn new(pattern: impl Into<String>) -> Self {
        Glob(pattern.into())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let mut parts = self.0.split('*');
        let Some(first) = parts.next() else {
            return text.is_empty();
        };
        let Some(mut rest) = text.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*` at all: an exact match.
            return rest.is_empty();
        };
        // Greedy-free: each middle piece at its first occurrence leaves the most room for the
        // rest, which is all a `*`-only glob needs.
        for piece in middle {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}
