//! The downstream APIs a message is fanned out to, by name, and sets of names as
//! carried in the `x-bridge-*-targets` headers.
//!
//! A target is configuration (a row: name, URL, token, body shape, rate limit),
//! not code: nothing here knows which targets exist.

use std::{fmt, sync::Arc};

/// A target's name: one or more lowercase ASCII letters, digits and `-`.
///
/// The alphabet keeps names safe in a comma list, a metric label and an
/// environment variable (`-` becomes `_`, so two names never share one).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName(Arc<str>);

/// Why a string is not a target name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadTargetName {
    #[error("a target name is empty")]
    Empty,
    #[error("target name {0:?} may only hold lowercase letters, digits and '-'")]
    Alphabet(String),
    #[error("target name {0:?} is longer than {max} characters", max = TargetName::MAX_LEN)]
    TooLong(String),
}

impl TargetName {
    /// Long enough for any sensible name, short enough for a metric label.
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// When `s` is empty, too long or outside the alphabet.
    pub fn parse(s: &str) -> Result<TargetName, BadTargetName> {
        if s.is_empty() {
            Err(BadTargetName::Empty)
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Err(BadTargetName::Alphabet(s.to_owned()))
        } else if s.len() > Self::MAX_LEN {
            Err(BadTargetName::TooLong(s.to_owned()))
        } else {
            Ok(TargetName(Arc::from(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `<N>` of `BRIDGE_TARGET_<N>_*`: upper-cased, `-` as `_`.
    pub fn env_key(&self) -> String {
        self.0
            .bytes()
            .map(|b| match b {
                b'-' => '_',
                b => char::from(b.to_ascii_uppercase()),
            })
            .collect()
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for TargetName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a target receives as its request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyShape {
    /// The message body, byte for byte.
    Raw,
    /// `{"event":E,"data":<json>,"message_id":M}` (the logging API's shape).
    Envelope,
}

impl BodyShape {
    pub const fn as_str(self) -> &'static str {
        match self {
            BodyShape::Raw => "raw",
            BodyShape::Envelope => "envelope",
        }
    }
}

/// A set of target names in the order they were added; formats as the comma
/// list of the contract (`user-management,logging`, or the empty string).
///
/// A list rather than a hash set: there are a handful of targets, the order
/// of a header must be stable, and an empty set allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetSet(Vec<TargetName>);

impl TargetSet {
    pub const fn empty() -> Self {
        TargetSet(Vec::new())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|n| n.as_str() == name)
    }

    /// Adds `name` unless it is already there.
    pub fn insert(&mut self, name: TargetName) {
        if !self.contains(name.as_str()) {
            self.0.push(name);
        }
    }

    /// Everything in `self`, then what `other` adds.
    pub fn union(mut self, other: &TargetSet) -> TargetSet {
        for n in other.iter() {
            self.insert(n.clone());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TargetName> {
        self.0.iter()
    }

    /// Parses a header value leniently: names are trimmed, empty items are
    /// skipped, and items that are not target names are returned apart (a
    /// header written by hand or by a newer version must not make a message
    /// undeliverable). Whether a name is *configured* is the worker's
    /// question, not this one's.
    pub fn parse_lenient(value: &str) -> (TargetSet, Vec<String>) {
        let mut set = TargetSet::empty();
        let mut invalid = Vec::new();
        for item in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match TargetName::parse(item) {
                Ok(name) => set.insert(name),
                Err(_) => invalid.push(item.to_owned()),
            }
        }
        (set, invalid)
    }
}

impl FromIterator<TargetName> for TargetSet {
    fn from_iter<I: IntoIterator<Item = TargetName>>(iter: I) -> Self {
        let mut set = TargetSet::empty();
        for t in iter {
            set.insert(t);
        }
        set
    }
}

impl fmt::Display for TargetSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(t.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) fn name(s: &str) -> TargetName {
    TargetName::parse(s).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_lowercase_letters_digits_and_dashes() {
        for ok in ["user-management", "logging", "crm2", "a", "-x-"] {
            assert_eq!(TargetName::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(TargetName::parse(""), Err(BadTargetName::Empty));
        for bad in ["Billing", "a_b", "a b", "é", "a,b", "a.b"] {
            assert!(
                matches!(TargetName::parse(bad), Err(BadTargetName::Alphabet(_))),
                "{bad}"
            );
        }
        assert!(TargetName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn env_keys_upper_case_and_underscore() {
        assert_eq!(name("user-management").env_key(), "USER_MANAGEMENT");
        assert_eq!(name("crm2").env_key(), "CRM2");
    }

    #[test]
    fn formats_in_insertion_order_without_duplicates() {
        let set: TargetSet = [name("logging"), name("user-management"), name("logging")]
            .into_iter()
            .collect();
        assert_eq!(set.to_string(), "logging,user-management");
        assert_eq!(set.len(), 2);
        assert_eq!(TargetSet::empty().to_string(), "");
    }

    #[test]
    fn parses_leniently() {
        let (set, invalid) = TargetSet::parse_lenient(" logging , ,billing,Bad_Name,");
        assert!(set.contains("logging"));
        assert!(set.contains("billing"));
        assert!(!set.contains("user-management"));
        assert_eq!(invalid, vec!["Bad_Name".to_owned()]);
        assert_eq!(TargetSet::parse_lenient("").0, TargetSet::empty());
    }

    #[test]
    fn union_and_roundtrip() {
        let a: TargetSet = [name("user-management")].into_iter().collect();
        let b: TargetSet = [name("logging"), name("user-management")]
            .into_iter()
            .collect();
        let u = a.union(&b);
        assert_eq!(u.to_string(), "user-management,logging");
        assert_eq!(TargetSet::parse_lenient(&u.to_string()).0, u);
    }
}
