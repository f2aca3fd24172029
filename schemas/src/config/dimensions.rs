//! The `match` of a dimensional rate (docs/reference.md#rates-and-segments):
//! which event dimension each key names, the `*` globs its values are, and
//! whether two matches can select the same event (a tie the configuration
//! refuses).

use std::fmt;

/// An event dimension a rate can match on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// The event's `region`.
    Region,
    /// The event's `service`.
    Service,
    /// The value of the event's label `KEY` (`labels.KEY`).
    Label(String),
}

impl Dimension {
    /// The dimension a `match` key names: `region`, `service` or `labels.KEY`
    /// with a non-empty `KEY`; `None` for anything else.
    pub fn parse(key: &str) -> Option<Dimension> {
        match key {
            "region" => Some(Dimension::Region),
            "service" => Some(Dimension::Service),
            _ => key
                .strip_prefix("labels.")
                .filter(|label| !label.is_empty())
                .map(|label| Dimension::Label(label.to_string())),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::Region => f.write_str("region"),
            Dimension::Service => f.write_str("service"),
            Dimension::Label(label) => write!(f, "labels.{label}"),
        }
    }
}

/// A value pattern: exact text where it has no `*`, each `*` standing for any
/// run of characters (the empty one included).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Glob(String);

impl Glob {
    /// The pattern as written.
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `value` matches the whole pattern. Compared byte by byte: `*`
    /// is one byte in UTF-8 and no character's bytes hold it, and a literal
    /// run of the pattern starts on a character, so it can only match from
    /// one of the value's (no allocation: rollups test every event).
    pub fn matches(&self, value: &str) -> bool {
        let (pattern, value) = (self.0.as_bytes(), value.as_bytes());
        // Greedy matching with backtracking to the last `*`: linear in practice,
        // O(pattern × value) at worst.
        let (mut p, mut v) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while v < value.len() {
            if p < pattern.len() && pattern[p] != b'*' && pattern[p] == value[v] {
                p += 1;
                v += 1;
            } else if p < pattern.len() && pattern[p] == b'*' {
                star = Some((p, v));
                p += 1;
            } else if let Some((star_p, star_v)) = star {
                p = star_p + 1;
                v = star_v + 1;
                star = Some((star_p, star_v + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }

    /// Whether some value matches both `self` and `other`.
    pub fn overlaps(&self, other: &Glob) -> bool {
        let a: Vec<char> = self.0.chars().collect();
        let b: Vec<char> = other.0.chars().collect();
        // reach[i][j]: a common prefix of some value can leave `a` at `i` and `b`
        // at `j`. A `*` may end (move on) or take one character the other side
        // produces; two literals must agree.
        let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
        reach[0][0] = true;
        for i in 0..=a.len() {
            for j in 0..=b.len() {
                if !reach[i][j] {
                    continue;
                }
                let (ca, cb) = (a.get(i), b.get(j));
                if ca == Some(&'*') {
                    reach[i + 1][j] = true;
                    if cb.is_some() {
                        reach[i][j + 1] = true;
                    }
                }
                if cb == Some(&'*') {
                    reach[i][j + 1] = true;
                    if ca.is_some() {
                        reach[i + 1][j] = true;
                    }
                }
                if let (Some(x), Some(y)) = (ca, cb)
                    && *x != '*'
                    && *y != '*'
                    && x == y
                {
                    reach[i + 1][j + 1] = true;
                }
            }
        }
        reach[a.len()][b.len()]
    }
}

/// The `match` of a rate, keys in order: a rate without one has none and
/// matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RateMatch(Vec<(Dimension, Glob)>);

impl RateMatch {
    /// A match of `(dimension, pattern)` pairs, in any order, each dimension once.
    pub fn new(mut pairs: Vec<(Dimension, Glob)>) -> RateMatch {
        pairs.sort();
        RateMatch(pairs)
    }

    /// Its `(dimension, pattern)` pairs, ordered by dimension.
    pub fn pairs(&self) -> &[(Dimension, Glob)] {
        &self.0
    }

    /// How many dimensions it constrains: the more, the more specific.
    pub fn specificity(&self) -> usize {
        self.0.len()
    }

    /// Whether an event whose value of each dimension `value_of` gives matches
    /// every pair. An event without a value of a constrained dimension does not
    /// match, not even `*`.
    pub fn matches<'v>(&self, mut value_of: impl FnMut(&Dimension) -> Option<&'v str>) -> bool {
        self.0
            .iter()
            .all(|(dimension, glob)| value_of(dimension).is_some_and(|v| glob.matches(v)))
    }

    /// Whether one event can match both: every dimension both constrain has
    /// overlapping patterns.
    pub fn overlaps(&self, other: &RateMatch) -> bool {
        self.0.iter().all(|(dimension, glob)| {
            other
                .0
                .iter()
                .find(|(d, _)| d == dimension)
                .is_none_or(|(_, theirs)| glob.overlaps(theirs))
        })
    }
}

/// The classes of events that a set of rate matches tells apart: two events
/// of one class satisfy the same matches, so every price book whose matches
/// are among them prices them alike. Usage summed per class (with one member's
/// values to stand for it) can be priced exactly, and has far fewer groups than
/// usage summed per distinct values (docs/reference.md#dimensional-rates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MatchClasses {
    /// Every dimension some match constrains, in order.
    dimensions: Vec<Dimension>,
    /// The matches, each once, in order (a match of no keys tells nothing apart
    /// and is left out).
    matches: Vec<RateMatch>,
}

impl MatchClasses {
    /// The classes `matches` tell apart.
    pub fn new(matches: impl IntoIterator<Item = RateMatch>) -> MatchClasses {
        let mut matches: Vec<RateMatch> = matches
            .into_iter()
            .filter(|m| m.specificity() > 0)
            .collect();
        matches.sort();
        matches.dedup();
        let mut dimensions: Vec<Dimension> = matches
            .iter()
            .flat_map(|m| m.pairs().iter().map(|(d, _)| d.clone()))
            .collect();
        dimensions.sort();
        dimensions.dedup();
        MatchClasses {
            dimensions,
            matches,
        }
    }

    /// The dimensions whose values decide the class, in order.
    pub fn dimensions(&self) -> &[Dimension] {
        &self.dimensions
    }

    /// The matches, in order.
    pub fn matches(&self) -> &[RateMatch] {
        &self.matches
    }

    /// Whether it tells nothing apart (no match has keys).
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// The class of an event whose values of [`Self::dimensions`] are
    /// `values` (in that order), written into `class`: bit `i` set when it
    /// satisfies the `i`-th match.
    pub fn class_of(&self, values: &[Option<&str>], class: &mut Vec<u64>) {
        let value_of = |dimension: &Dimension| {
            self.dimensions
                .iter()
                .position(|d| d == dimension)
                .and_then(|i| values.get(i).copied().flatten())
        };
        class.clear();
        class.resize(self.matches.len().div_ceil(64), 0);
        for (i, rate_match) in self.matches.iter().enumerate() {
            if rate_match.matches(value_of) {
                class[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// Whether each of its classes lies within one class of `other`: every
    /// match of `other` is one of its own, so usage summed per its classes can
    /// be summed further per `other`'s.
    pub fn refines(&self, other: &MatchClasses) -> bool {
        other
            .matches
            .iter()
            .all(|m| self.matches.binary_search(m).is_ok())
    }

    /// The classes both tell apart: the matches of either.
    pub fn union(&self, other: &MatchClasses) -> MatchClasses {
        MatchClasses::new(self.matches.iter().chain(&other.matches).cloned())
    }
}

/// The `dimensions` text of an invoice line: `region=eu-*;service=gpu`, empty
/// for a rate without `match`.
impl fmt::Display for RateMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (dimension, glob)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{dimension}={}", glob.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn globs_match_whole_values() {
        let g = Glob::new;
        assert!(g("eu-*").matches("eu-west-1"));
        assert!(g("eu-*").matches("eu-"));
        assert!(g("ré*").matches("région"));
        assert!(g("*é").matches("café"));
        assert!(!g("*é").matches("cafe"));
        assert!(g("*ö*").matches("zürich-köln"));
        assert!(!g("*ö*").matches("zürich"));
        assert!(!g("eu-*").matches("us-east-1"));
        assert!(!g("eu-west").matches("eu-west-1"));
        assert!(g("*-1").matches("eu-west-1"));
        assert!(g("m7g.*").matches("m7g.large"));
        assert!(!g("m7g.*").matches("m7gxlarge"));
        assert!(g("a*b*c").matches("aXbYbZc"));
        assert!(!g("a*b*c").matches("aXbYbZ"));
        assert!(g("*").matches(""));
        assert!(g("").matches(""));
        assert!(!g("").matches("x"));
    }

    #[test]
    fn globs_overlap_when_one_value_matches_both() {
        let overlap = |a: &str, b: &str| Glob::new(a).overlaps(&Glob::new(b));
        assert!(overlap("eu-*", "*-1"));
        assert!(overlap("eu-*", "eu-west-1"));
        assert!(overlap("*", "anything"));
        assert!(!overlap("eu-*", "us-*"));
        assert!(!overlap("eu-west-1", "eu-west-2"));
        assert!(overlap("a*", "*b*c"));
        assert!(overlap("a*", "*b"));
        assert!(!overlap("a*x", "b*"));
    }

    #[test]
    fn a_missing_value_matches_no_pattern() {
        let m = RateMatch::new(vec![(Dimension::Region, Glob::new("*"))]);
        assert!(!m.matches(|_| None));
        assert!(m.matches(|_| Some("eu-west-1")));
        assert!(RateMatch::default().matches(|_| None));
        assert_eq!(
            RateMatch::new(vec![
                (Dimension::Service, Glob::new("gpu")),
                (Dimension::Region, Glob::new("eu-*")),
            ])
            .to_string(),
            "region=eu-*;service=gpu"
        );
    }

    proptest! {
        #[test]
        fn a_value_matching_both_means_they_overlap(
            a in "[ab*]{0,5}", b in "[ab*]{0,5}", v in "[ab]{0,6}"
        ) {
            let (ga, gb) = (Glob::new(&a), Glob::new(&b));
            if ga.matches(&v) && gb.matches(&v) {
                prop_assert!(ga.overlaps(&gb));
            }
            prop_assert_eq!(ga.overlaps(&gb), gb.overlaps(&ga));
        }

        #[test]
        fn overlapping_globs_share_a_short_value(a in "[ab*]{0,4}", b in "[ab*]{0,4}") {
            // Two globs of at most 4 characters that overlap share a value of at
            // most 8 characters over {a, b}.
            let (ga, gb) = (Glob::new(&a), Glob::new(&b));
            let mut witness = false;
            for len in 0..=8u32 {
                for bits in 0..(1u32 << len) {
                    let v: String = (0..len).map(|i| if bits >> i & 1 == 1 { 'b' } else { 'a' }).collect();
                    witness |= ga.matches(&v) && gb.matches(&v);
                }
            }
            prop_assert_eq!(ga.overlaps(&gb), witness);
        }
    }
}
