//! How the call outcomes of one delivery, one per configured target, become
//! its [`Disposition`]: the one decision the worker then carries out in
//! `settle`.

use super::{Reason, TargetName, TargetSet};

/// Whether a failed call may succeed if tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection error, timeout, 408, 429, 5xx.
    Transient,
    /// Any other non-2xx status (3xx included: redirects are not followed).
    Permanent,
}

/// A call that did not succeed after its attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFailure {
    pub kind: FailureKind,
    pub attempts: u32,
    /// What the last attempt met, e.g. `HTTP 503` or `timed out`.
    pub last_error: String,
}

impl CallFailure {
    /// One human line for `x-bridge-error`, e.g.
    /// `logging: HTTP 503 after 3 attempts`.
    pub fn describe(&self, target: &TargetName) -> String {
        let plural = if self.attempts == 1 { "" } else { "s" };
        format!(
            "{target}: {} after {} attempt{plural}",
            self.last_error, self.attempts
        )
    }
}

/// The result of calling one target for one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Not called: an earlier delivery already got it accepted.
    AlreadyDone,
    Succeeded {
        attempts: u32,
    },
    Failed(CallFailure),
}

/// What the broker should be told about a message once its calls are over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Every target accepted it: ack.
    Ack,
    /// To the DLQ with its reason, then ack.
    DeadLetter(DeadLetter),
    /// Only transient failures under the `hold` policy: back to the inbound
    /// queue with the targets that accepted it, then ack, and pause.
    Hold { done: TargetSet },
    /// Its calls were stopped before they all ended (it outlived the grace
    /// of a hold pause, or of shutdown): back to the inbound
    /// queue with the targets that accepted it so far, then ack, without a
    /// new pause. Handing it back instead would lose that record.
    Return { done: TargetSet },
}

/// What the DLQ headers say about a dead-lettered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: Reason,
    pub failed: TargetSet,
    pub done: TargetSet,
    /// One line per failed target, or why the body was rejected.
    pub errors: Vec<String>,
    /// The largest number of attempts made for a failed target.
    pub attempts: u32,
}

impl DeadLetter {
    pub fn invalid_payload(why: String) -> DeadLetter {
        DeadLetter {
            reason: Reason::InvalidPayload,
            failed: TargetSet::empty(),
            done: TargetSet::empty(),
            errors: vec![why],
            attempts: 0,
        }
    }
}

/// What to do with a message given what each configured target said, in the
/// configured order.
///
/// `prior_done` are the targets an earlier delivery already got the message
/// accepted by (names no longer configured included: they stay in the
/// message's record, so the done list is the union of the old one and what
/// succeeded now); `hold_on_outage` is `BRIDGE_OUTAGE_POLICY=hold`. A permanent
/// failure of any target always dead-letters.
pub fn decide<'a, I>(prior_done: &TargetSet, outcomes: I, hold_on_outage: bool) -> Disposition
where
    I: IntoIterator<Item = (&'a TargetName, &'a CallOutcome)> + Clone,
{
    // The common case allocates nothing.
    let any_failed = outcomes
        .clone()
        .into_iter()
        .any(|(_, o)| matches!(o, CallOutcome::Failed(_)));
    if !any_failed {
        return Disposition::Ack;
    }
    let mut done = TargetSet::empty();
    let mut failed = TargetSet::empty();
    let mut errors = Vec::new();
    let mut attempts = 0;
    let mut any_permanent = false;
    for (target, outcome) in outcomes {
        match outcome {
            CallOutcome::AlreadyDone | CallOutcome::Succeeded { .. } => done.insert(target.clone()),
            CallOutcome::Failed(f) => {
                failed.insert(target.clone());
                errors.push(f.describe(target));
                attempts = attempts.max(f.attempts);
                any_permanent |= f.kind == FailureKind::Permanent;
            }
        }
    }
    let done = done.union(prior_done);
    if hold_on_outage && !any_permanent {
        Disposition::Hold { done }
    } else {
        Disposition::DeadLetter(DeadLetter {
            reason: Reason::ApiFailed,
            failed,
            done,
            errors,
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::target::name;

    fn failed(kind: FailureKind, attempts: u32, last: &str) -> CallOutcome {
        CallOutcome::Failed(CallFailure {
            kind,
            attempts,
            last_error: last.into(),
        })
    }

    const OK: CallOutcome = CallOutcome::Succeeded { attempts: 1 };
    const DONE: CallOutcome = CallOutcome::AlreadyDone;

    fn run(prior: &str, outcomes: &[(&str, CallOutcome)], hold: bool) -> Disposition {
        let prior = TargetSet::parse_lenient(prior).0;
        let rows: Vec<(TargetName, CallOutcome)> =
            outcomes.iter().map(|(n, o)| (name(n), o.clone())).collect();
        decide(&prior, rows.iter().map(|(n, o)| (n, o)), hold)
    }

    fn dead_letter(d: Disposition) -> DeadLetter {
        match d {
            Disposition::DeadLetter(dl) => dl,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_succeed_acks() {
        let d = run("", &[("user-management", OK), ("logging", OK)], false);
        assert_eq!(d, Disposition::Ack);
        assert_eq!(run("", &[("only", OK)], false), Disposition::Ack);
    }

    #[test]
    fn already_done_counts_as_done() {
        let d = run(
            "user-management",
            &[("user-management", DONE), ("logging", OK)],
            false,
        );
        assert_eq!(d, Disposition::Ack);
    }

    #[test]
    fn failure_dead_letters_with_details() {
        let d = run(
            "",
            &[
                ("user-management", OK),
                ("logging", failed(FailureKind::Transient, 3, "HTTP 503")),
            ],
            false,
        );
        let dl = dead_letter(d);
        assert_eq!(dl.reason, Reason::ApiFailed);
        assert_eq!(dl.failed.to_string(), "logging");
        assert_eq!(dl.done.to_string(), "user-management");
        assert_eq!(
            dl.errors,
            vec!["logging: HTTP 503 after 3 attempts".to_owned()]
        );
        assert_eq!(dl.attempts, 3);
    }

    #[test]
    fn three_targets_in_configured_order() {
        let d = run(
            "",
            &[
                ("crm", OK),
                ("billing", failed(FailureKind::Permanent, 1, "HTTP 400")),
                ("audit", OK),
            ],
            false,
        );
        let dl = dead_letter(d);
        assert_eq!(dl.failed.to_string(), "billing");
        assert_eq!(dl.done.to_string(), "crm,audit");
        assert_eq!(dl.errors, vec!["billing: HTTP 400 after 1 attempt"]);
    }

    #[test]
    fn unconfigured_prior_names_stay_in_the_record() {
        let d = run(
            "old,logging",
            &[
                ("logging", DONE),
                ("new", failed(FailureKind::Transient, 2, "timed out")),
            ],
            false,
        );
        let dl = dead_letter(d);
        assert_eq!(dl.done.to_string(), "logging,old");
        assert_eq!(dl.failed.to_string(), "new");
    }

    #[test]
    fn attempts_is_the_largest_and_singular_reads_well() {
        let d = run(
            "",
            &[
                (
                    "user-management",
                    failed(FailureKind::Permanent, 1, "HTTP 400"),
                ),
                ("logging", failed(FailureKind::Transient, 3, "timed out")),
            ],
            false,
        );
        let dl = dead_letter(d);
        assert_eq!(dl.attempts, 3);
        assert_eq!(dl.failed.to_string(), "user-management,logging");
        assert_eq!(dl.errors[0], "user-management: HTTP 400 after 1 attempt");
    }

    #[test]
    fn hold_only_when_every_failure_is_transient() {
        let d = run(
            "logging",
            &[
                (
                    "user-management",
                    failed(FailureKind::Transient, 3, "HTTP 503"),
                ),
                ("logging", DONE),
                ("crm", OK),
            ],
            true,
        );
        assert_eq!(
            d,
            Disposition::Hold {
                done: TargetSet::parse_lenient("logging,crm").0
            }
        );

        let d = run(
            "",
            &[
                ("user-management", OK),
                ("logging", failed(FailureKind::Permanent, 1, "HTTP 404")),
                ("crm", failed(FailureKind::Transient, 3, "HTTP 503")),
            ],
            true,
        );
        assert!(matches!(d, Disposition::DeadLetter(_)));
    }
}
