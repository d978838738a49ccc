//! Broadcast filters on subject and sender, with `*` wildcards matched against the whole string.

use super::message::Broadcast;

/// Which broadcasts a subscriber receives. Patterns may contain `*` (any run of characters,
/// dots included) and must match the **whole** subject or sender: `bob.jones` does not match
/// `bob.jonesy` (kiwipy matches only a prefix there). Several patterns of one kind are OR-ed;
/// subject and sender filters are AND-ed. A broadcast without a subject (or sender) does not pass
/// a subject (or sender) filter. An empty filter passes everything.
///
/// ```
/// use runtime_thread::messaging::{Broadcast, BroadcastFilter};
///
/// let filter = BroadcastFilter::new().subject("purchase.*").sender("*.jones");
/// assert!(filter.matches(&Broadcast::new(1).subject("purchase.car").sender("bob.jones")));
/// assert!(!filter.matches(&Broadcast::new(1).subject("purchase.car").sender("bob.jonesy")));
/// assert!(!filter.matches(&Broadcast::new(1).subject("sale.car").sender("bob.jones")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastFilter {
    subjects: Vec<String>,
    senders: Vec<String>,
}

impl BroadcastFilter {
    /// A filter that passes everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accept subjects matching `pattern`.
    pub fn subject(mut self, pattern: impl Into<String>) -> Self {
        self.subjects.push(pattern.into());
        self
    }

    /// Also accept senders matching `pattern`.
    pub fn sender(mut self, pattern: impl Into<String>) -> Self {
        self.senders.push(pattern.into());
        self
    }

    /// Whether `message` passes.
    pub fn matches(&self, message: &Broadcast) -> bool {
        passes(&self.subjects, message.subject.as_deref())
            && passes(&self.senders, message.sender.as_deref())
    }
}

fn passes(patterns: &[String], value: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    value.is_some_and(|value| patterns.iter().any(|p| glob_matches(p, value)))
}

/// Whole-string match where `*` stands for any run of characters.
fn glob_matches(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all: the prefix had to be everything
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_whole_strings() {
        let cases = [
            ("bob.jones", "bob.jones", true),
            ("bob.jones", "bob.jonesy", false),
            ("bob.jones", "xbob.jones", false),
            ("*.jones", "alice.jones", true),
            ("*.jones", "alice.jonesy", false),
            ("purchase.*", "purchase.car.red", true),
            ("purchase.*", "purchase", false),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("a*a", "a", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                glob_matches(pattern, value),
                expected,
                "{pattern} ~ {value}"
            );
        }
    }
}
