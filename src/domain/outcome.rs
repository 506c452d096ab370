//! How the two call outcomes of one delivery become its [`Disposition`]: the one
//! decision the worker then carries out in `settle`.

use super::{Reason, Target, TargetSet};

/// Whether a failed call may succeed if tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection error, timeout, 408, 429, 5xx.
    Transient,
    /// Any other non-2xx status.
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
    pub fn describe(&self, target: Target) -> String {
        let plural = if self.attempts == 1 { "" } else { "s" };
        format!(
            "{target}: {} after {} attempt{plural}",
            self.last_error, self.attempts
        )
    }
}

/// The result of calling one API for one delivery.
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
    /// Both APIs accepted it: ack.
    Ack,
    /// To the DLQ with its reason, then ack.
    DeadLetter(DeadLetter),
    /// Only transient failures under the `hold` policy: back to the inbound
    /// queue with the APIs that accepted it, then ack, and pause.
    Hold { done: TargetSet },
}

/// What the DLQ headers say about a dead-lettered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: Reason,
    pub failed: TargetSet,
    pub done: TargetSet,
    /// One line per failed API, or why the body was rejected.
    pub errors: Vec<String>,
    /// The largest number of attempts made for a failed API.
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

/// What to do with a message given what each API said.
///
/// `prior_done` are the APIs an earlier delivery already got the message
/// accepted by; `hold_on_outage` is `BRIDGE_OUTAGE_POLICY=hold`. A permanent
/// failure of either API always dead-letters.
pub fn decide(
    prior_done: TargetSet,
    outcomes: &[(Target, CallOutcome)],
    hold_on_outage: bool,
) -> Disposition {
    let mut done = prior_done;
    let mut failed = TargetSet::empty();
    let mut errors = Vec::new();
    let mut attempts = 0;
    let mut any_permanent = false;
    for (target, outcome) in outcomes {
        match outcome {
            CallOutcome::AlreadyDone => {}
            CallOutcome::Succeeded { .. } => done.insert(*target),
            CallOutcome::Failed(f) => {
                failed.insert(*target);
                errors.push(f.describe(*target));
                attempts = attempts.max(f.attempts);
                any_permanent |= f.kind == FailureKind::Permanent;
            }
        }
    }
    if failed.is_empty() {
        Disposition::Ack
    } else if hold_on_outage && !any_permanent {
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

    fn failed(kind: FailureKind, attempts: u32, last: &str) -> CallOutcome {
        CallOutcome::Failed(CallFailure {
            kind,
            attempts,
            last_error: last.into(),
        })
    }

    const OK: CallOutcome = CallOutcome::Succeeded { attempts: 1 };

    #[test]
    fn both_succeed_acks() {
        let d = decide(
            TargetSet::empty(),
            &[(Target::UserManagement, OK), (Target::Logging, OK)],
            false,
        );
        assert_eq!(d, Disposition::Ack);
    }

    #[test]
    fn already_done_counts_as_done() {
        let prior: TargetSet = [Target::UserManagement].into_iter().collect();
        let d = decide(
            prior,
            &[
                (Target::UserManagement, CallOutcome::AlreadyDone),
                (Target::Logging, OK),
            ],
            false,
        );
        assert_eq!(d, Disposition::Ack);
    }

    #[test]
    fn failure_dead_letters_with_details() {
        let d = decide(
            TargetSet::empty(),
            &[
                (Target::UserManagement, OK),
                (
                    Target::Logging,
                    failed(FailureKind::Transient, 3, "HTTP 503"),
                ),
            ],
            false,
        );
        let Disposition::DeadLetter(dl) = d else {
            panic!("{d:?}")
        };
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
    fn attempts_is_the_largest_and_singular_reads_well() {
        let d = decide(
            TargetSet::empty(),
            &[
                (
                    Target::UserManagement,
                    failed(FailureKind::Permanent, 1, "HTTP 400"),
                ),
                (
                    Target::Logging,
                    failed(FailureKind::Transient, 3, "timed out"),
                ),
            ],
            false,
        );
        let Disposition::DeadLetter(dl) = d else {
            panic!()
        };
        assert_eq!(dl.attempts, 3);
        assert_eq!(dl.failed.to_string(), "user-management,logging");
        assert_eq!(dl.errors[0], "user-management: HTTP 400 after 1 attempt");
    }

    #[test]
    fn hold_only_when_every_failure_is_transient() {
        let prior: TargetSet = [Target::Logging].into_iter().collect();
        let d = decide(
            prior,
            &[
                (
                    Target::UserManagement,
                    failed(FailureKind::Transient, 3, "HTTP 503"),
                ),
                (Target::Logging, CallOutcome::AlreadyDone),
            ],
            true,
        );
        assert_eq!(d, Disposition::Hold { done: prior });

        let d = decide(
            TargetSet::empty(),
            &[
                (Target::UserManagement, OK),
                (
                    Target::Logging,
                    failed(FailureKind::Permanent, 1, "HTTP 404"),
                ),
            ],
            true,
        );
        assert!(matches!(d, Disposition::DeadLetter(_)));
    }
}
