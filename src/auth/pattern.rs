//! The topics a token lets its holder use: the `subscribe` and `publish`
//! claims, each a list of patterns. A pattern is either an exact topic name
//! or `prefix.*`, every topic under `prefix.`; nothing richer, so that what
//! a token grants can be read at a glance and checked without backtracking.

use std::fmt;

/// One entry of a `subscribe` or `publish` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(String),
    /// Any topic that starts with this text (which ends in `.`) and has at
    /// least one more character after it: `news.*` is stored as `news.` and
    /// allows `news.eu` but not `news.` or `news`.
    Prefix(String),
}

impl TopicPattern {
    /// Reads a claim string. `*` may only appear as the last character,
    /// right after a `.` that follows a non-empty prefix; anywhere else (a
    /// lone `*`, `news*`, `a.*.b`) it is an error, so a token never grants
    /// more than its issuer could have meant. An empty pattern is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty topic pattern".to_owned());
        }
        let (body, prefix) = match text.strip_suffix(".*") {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') || body.is_empty() {
            return Err(format!(
                "topic pattern {text:?}: `*` may only end a pattern, as `prefix.*`"
            ));
        }
        Ok(if prefix {
            Self::Prefix(format!("{body}."))
        } else {
            Self::Exact(text.to_owned())
        })
    }

    /// Whether this pattern allows `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Exact(name) => topic == name,
            Self::Prefix(prefix) => {
                topic.len() > prefix.len() && topic.starts_with(prefix.as_str())
            }
        }
    }
}

impl fmt::Display for TopicPattern {
    /// Writes the pattern as it appears in a claim.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// Whether any of `patterns` allows `topic`. An empty list allows nothing.
pub fn allows(patterns: &[TopicPattern], topic: &str) -> bool {
    patterns.iter().any(|p| p.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> TopicPattern {
        TopicPattern::parse(text).unwrap()
    }

    #[test]
    fn exact_patterns_match_only_their_topic() {
        assert!(p("news").matches("news"));
        assert!(!p("news").matches("news.eu"));
        assert!(!p("news").matches("new"));
        assert!(!p("news").matches(""));
    }

    #[test]
    fn prefix_patterns_need_one_more_character() {
        let news = p("news.*");
        assert_eq!(news, TopicPattern::Prefix("news.".to_owned()));
        assert!(news.matches("news.eu"));
        assert!(news.matches("news.eu.fr"));
        assert!(!news.matches("news."));
        assert!(!news.matches("news"));
        assert!(!news.matches("newsy.eu"));
        assert!(p("a.b.*").matches("a.b.c"));
        assert!(!p("a.b.*").matches("a.bc"));
    }

    #[test]
    fn stars_anywhere_but_the_end_are_refused() {
        for bad in [
            "", "*", ".*", "news*", "*.news", "a.*.b", "a.**", "a*.*", "a.*.*",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn patterns_print_as_written() {
        for text in ["news", "news.*", "a.b.*", "a.b"] {
            assert_eq!(p(text).to_string(), text);
        }
    }

    #[test]
    fn allows_is_any_pattern() {
        let list = [p("chat"), p("news.*")];
        assert!(allows(&list, "chat"));
        assert!(allows(&list, "news.eu"));
        assert!(!allows(&list, "chat.x"));
        assert!(!allows(&[], "chat"));
    }

    /// The reference: a pattern is valid when its only `*` is a final one
    /// after `.` and a non-empty prefix; it matches, character by
    /// character, the topic equal to it, or (for `prefix.*`) any topic that
    /// is the pattern with its `*` replaced by one or more characters.
    fn naive_valid(pattern: &str) -> bool {
        let chars: Vec<char> = pattern.chars().collect();
        let stars: Vec<usize> = (0..chars.len()).filter(|&i| chars[i] == '*').collect();
        match stars.as_slice() {
            [] => !chars.is_empty(),
            [i] => *i == chars.len() - 1 && *i >= 2 && chars[*i - 1] == '.',
            _ => false,
        }
    }

    fn naive_matches(pattern: &str, topic: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = topic.chars().collect();
        if p.last() == Some(&'*') {
            let fixed = &p[..p.len() - 1];
            t.len() > fixed.len() && (0..fixed.len()).all(|i| t[i] == fixed[i])
        } else {
            p == t
        }
    }

    // A small alphabet so that stars, dots and shared prefixes collide often.
    const PATTERN: &str = "[ab.*é]{0,6}";
    const TOPIC: &str = "[ab.*é]{0,7}";

    proptest! {
        #[test]
        fn parse_agrees_with_the_reference(pattern in PATTERN) {
            prop_assert_eq!(TopicPattern::parse(&pattern).is_ok(), naive_valid(&pattern));
        }

        #[test]
        fn matching_agrees_with_the_reference(pattern in PATTERN, topic in TOPIC) {
            if let Ok(parsed) = TopicPattern::parse(&pattern) {
                prop_assert_eq!(parsed.matches(&topic), naive_matches(&pattern, &topic));
            }
        }

        /// Topics cut from the pattern itself, plus a little, so that the
        /// edges (the bare prefix, one more character) come up every run.
        #[test]
        fn matching_agrees_near_the_pattern(
            pattern in PATTERN,
            cut in 0usize..8,
            extra in "[ab.]{0,2}",
        ) {
            let topic: String = pattern.trim_end_matches('*').chars().take(cut).collect();
            let topic = topic + &extra;
            if let Ok(parsed) = TopicPattern::parse(&pattern) {
                prop_assert_eq!(parsed.matches(&topic), naive_matches(&pattern, &topic));
            }
        }

        #[test]
        fn allows_agrees_with_the_reference(
            patterns in proptest::collection::vec(PATTERN, 0..4),
            topic in TOPIC,
        ) {
            let valid: Vec<&String> = patterns.iter().filter(|p| naive_valid(p)).collect();
            let parsed: Vec<TopicPattern> =
                valid.iter().map(|p| TopicPattern::parse(p).unwrap()).collect();
            prop_assert_eq!(
                allows(&parsed, &topic),
                valid.iter().any(|p| naive_matches(p, &topic))
            );
        }

        #[test]
        fn a_prefix_allows_every_longer_topic_under_it(prefix in "[ab]{1,4}", rest in "[ab.]{1,4}") {
            let pattern = TopicPattern::parse(&format!("{prefix}.*")).unwrap();
            let under = format!("{prefix}.{rest}");
            prop_assert!(pattern.matches(&under));
        }
    }
}
