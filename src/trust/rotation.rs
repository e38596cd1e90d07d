//! What an SRE needs to know about a signer's CAs, and when to do each step of a rotation: pure, from the
//! loaded CAs, the policy's longest lifetime and the time. `csr-signer ca status` and `ca plan-rotation`
//! print it.
//!
//! The dates follow from two facts: a certificate never outlives the CA that signs it (so from
//! `notAfter - lifetime.max` on, new certificates come out shorter than the policy allows), and a client
//! must have a CA's root before the first certificate that chains to it (so the next CA is published at
//! least `propagation` before it signs).

use std::time::{Duration, SystemTime};

use crate::config::OtherCaState;

/// One CA as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFacts {
    pub name: String,
    /// `None` for the signing CA.
    pub state: Option<OtherCaState>,
    pub not_after: SystemTime,
    /// For a retiring CA: when it leaves the bundle.
    pub leaves_bundle: Option<SystemTime>,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The earliest moment the step may be taken (`None`: now).
    pub from: Option<SystemTime>,
    /// The moment by which it must be done (`None`: no deadline).
    pub by: Option<SystemTime>,
    pub what: String,
    /// The deadline has passed.
    pub overdue: bool,
}

/// The rotation plan for one signer.
pub fn plan(
    active: &CaFacts,
    others: &[CaFacts],
    max_lifetime: Duration,
    propagation: Duration,
    now: SystemTime,
) -> Vec<Step> {
    let mut steps = Vec::new();
    // From here on, new certificates are cut short by the signing CA's notAfter.
    let shrink = active
        .not_after
        .checked_sub(max_lifetime)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let published: Vec<&CaFacts> = others
        .iter()
        .filter(|c| c.state == Some(OtherCaState::Published) && c.not_after > now)
        .collect();
    match published.first() {
        None => {
            let by = shrink
                .checked_sub(propagation)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            steps.push(Step {
                from: None,
                by: Some(by),
                what: format!(
                    "create the next CA (valid well beyond {}) and add it to otherCas as `published`",
                    fmt(active.not_after)
                ),
                overdue: by <= now,
            });
            steps.push(Step {
                // Publishing now is the earliest: the switch can come `propagation` after it.
                from: Some(now + propagation),
                by: Some(shrink),
                what: format!(
                    "once every client has the bundle (at least {} after publishing), make the new CA the signing `ca` and move the current one to otherCas as `retiring`",
                    humantime::format_duration(propagation),
                ),
                overdue: now + propagation > shrink,
            });
        }
        Some(next) => {
            if next.not_after <= active.not_after {
                steps.push(Step {
                    from: None,
                    by: None,
                    what: format!(
                        "the published CA `{}` expires ({}) before the signing CA ({}): it cannot replace it; publish a longer-lived one",
                        next.name,
                        fmt(next.not_after),
                        fmt(active.not_after)
                    ),
                    overdue: true,
                });
            }
            steps.push(Step {
                from: None,
                by: Some(shrink),
                what: format!(
                    "once every client has the bundle with `{}` (at least {} after it was published), make `{}` the signing `ca` and move the current one to otherCas as `retiring`",
                    next.name,
                    humantime::format_duration(propagation),
                    next.name
                ),
                overdue: shrink <= now,
            });
        }
    }
    let old = Step {
        from: None,
        by: None,
        what: format!(
            "after the switch, the current CA stays in the bundle for {} (the longest lifetime) and leaves by itself; then remove it from otherCas",
            humantime::format_duration(max_lifetime)
        ),
        overdue: false,
    };
    steps.push(old);
    for r in others
        .iter()
        .filter(|c| c.state == Some(OtherCaState::Retiring))
    {
        let what = match r.leaves_bundle {
            Some(t) if t <= now => format!(
                "`{}` has left the bundle ({}): remove it from otherCas",
                r.name,
                fmt(t)
            ),
            Some(t) => format!(
                "`{}` is retiring and leaves the bundle by itself at {}; then remove it from otherCas",
                r.name,
                fmt(t)
            ),
            None => format!("`{}` is retiring", r.name),
        };
        steps.push(Step {
            from: r.leaves_bundle,
            by: None,
            what,
            overdue: false,
        });
    }
    steps
}

/// RFC 3339, seconds.
pub fn fmt(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + DAY * days as u32
    }

    fn active(expires_in_days: u64) -> CaFacts {
        CaFacts {
            name: "ca".into(),
            state: None,
            not_after: at(expires_in_days),
            leaves_bundle: None,
        }
    }

    #[test]
    fn without_a_next_ca_the_deadlines_count_back_from_the_signing_ca_expiry() {
        // CA expires in 100 days, certificates live 30 days, clients need 7 days to get a bundle.
        let steps = plan(&active(100), &[], 30 * DAY, 7 * DAY, at(0));
        assert_eq!(
            steps[0].by,
            Some(at(63)),
            "publish by expiry - lifetime - propagation"
        );
        assert!(!steps[0].overdue);
        assert_eq!(
            steps[1].by,
            Some(at(70)),
            "switch before certificates get shorter"
        );
        assert_eq!(
            steps[1].from,
            Some(at(7)),
            "not before clients had time to get the bundle"
        );
        assert!(steps[2].what.contains("30days"), "{}", steps[2].what);
        // 65 days later the publish deadline has passed, the switch deadline not yet.
        let late = plan(&active(100), &[], 30 * DAY, 7 * DAY, at(65));
        assert!(
            late[0].overdue && late[1].overdue,
            "a switch 7 days from now is after day 70"
        );
        let tight = plan(&active(100), &[], 30 * DAY, 7 * DAY, at(62));
        assert!(!tight[0].overdue && !tight[1].overdue);
    }

    #[test]
    fn a_published_ca_that_dies_first_is_flagged() {
        let next = CaFacts {
            name: "next".into(),
            state: Some(OtherCaState::Published),
            not_after: at(90),
            leaves_bundle: None,
        };
        let steps = plan(&active(100), &[next], 30 * DAY, 7 * DAY, at(0));
        assert!(steps[0].overdue && steps[0].what.contains("cannot replace"));
        assert_eq!(steps[1].by, Some(at(70)));
    }

    #[test]
    fn a_retiring_ca_says_when_it_leaves() {
        let old = CaFacts {
            name: "old".into(),
            state: Some(OtherCaState::Retiring),
            not_after: at(50),
            leaves_bundle: Some(at(20)),
        };
        let steps = plan(
            &active(400),
            std::slice::from_ref(&old),
            30 * DAY,
            7 * DAY,
            at(0),
        );
        let last = steps.last().unwrap();
        assert_eq!(last.from, Some(at(20)));
        assert!(
            last.what.contains("leaves the bundle by itself"),
            "{}",
            last.what
        );
        let later = plan(&active(400), &[old], 30 * DAY, 7 * DAY, at(21));
        assert!(later.last().unwrap().what.contains("has left the bundle"));
    }
}
