//! The downstream APIs a message is fanned out to, and sets of them as carried in
//! the `x-bridge-*-targets` headers.

use std::fmt;

/// One downstream API. Adding a third API is one more variant here and its
/// settings in `config`; the header spelling comes from [`Target::as_str`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    UserManagement,
    Logging,
}

impl Target {
    /// Every target, in the order used for headers and logs.
    pub const ALL: [Target; 2] = [Target::UserManagement, Target::Logging];

    /// The name used in headers, metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Target::UserManagement => "user-management",
            Target::Logging => "logging",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.as_str() == name)
    }

    const fn bit(self) -> u8 {
        match self {
            Target::UserManagement => 1,
            Target::Logging => 2,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of targets; formats as the comma list of the contract
/// (`user-management,logging`, or the empty string).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSet(u8);

impl TargetSet {
    pub const fn empty() -> Self {
        TargetSet(0)
    }

    pub fn contains(self, target: Target) -> bool {
        self.0 & target.bit() != 0
    }

    pub fn insert(&mut self, target: Target) {
        self.0 |= target.bit();
    }

    pub fn union(self, other: TargetSet) -> TargetSet {
        TargetSet(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Target> {
        Target::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// Parses a header value leniently: names are trimmed, empty items and
    /// unknown names are ignored (a header written by a newer version must not
    /// make a message undeliverable). Returns the set and the unknown names.
    pub fn parse_lenient(value: &str) -> (TargetSet, Vec<String>) {
        let mut set = TargetSet::empty();
        let mut unknown = Vec::new();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match Target::parse(name) {
                Some(t) => set.insert(t),
                None => unknown.push(name.to_owned()),
            }
        }
        (set, unknown)
    }
}

impl FromIterator<Target> for TargetSet {
    fn from_iter<I: IntoIterator<Item = Target>>(iter: I) -> Self {
        let mut set = TargetSet::empty();
        for t in iter {
            set.insert(t);
        }
        set
    }
}

impl fmt::Display for TargetSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(t.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_fixed_order() {
        let set: TargetSet = [Target::Logging, Target::UserManagement]
            .into_iter()
            .collect();
        assert_eq!(set.to_string(), "user-management,logging");
        assert_eq!(TargetSet::empty().to_string(), "");
    }

    #[test]
    fn parses_leniently() {
        let (set, unknown) = TargetSet::parse_lenient(" logging , ,billing,");
        assert!(set.contains(Target::Logging));
        assert!(!set.contains(Target::UserManagement));
        assert_eq!(unknown, vec!["billing".to_owned()]);
        assert_eq!(TargetSet::parse_lenient("").0, TargetSet::empty());
    }

    #[test]
    fn union_and_roundtrip() {
        let a: TargetSet = [Target::UserManagement].into_iter().collect();
        let b: TargetSet = [Target::Logging].into_iter().collect();
        let u = a.union(b);
        assert_eq!(TargetSet::parse_lenient(&u.to_string()).0, u);
    }
}
