//! Status conditions, Kubernetes style: a condition whose status does not change keeps its
//! `lastTransitionTime`, so `kubectl describe` tells when things really changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types the controller writes.
pub mod types {
    pub const READY: &str = "Ready";
    pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
    pub const ROLES_VERIFIED: &str = "RolesVerified";
    pub const ENGINE_AVAILABLE: &str = "EngineAvailable";
    pub const IN_SYNC: &str = "InSync";
    pub const COMMITTED: &str = "Committed";
    pub const VERIFIED: &str = "Verified";
    pub const PLAN_SAFE: &str = "PlanSafe";
}

/// Sets (or adds) a condition. The transition time moves only when the status changes;
/// reason and message are updated either way.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) {
    let status = if ok { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
                c.status = status;
            }
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_status_change() {
        let mut c = Vec::new();
        set(
            &mut c,
            types::ROLES_VERIFIED,
            false,
            "MissingRoles",
            "user x lacks restore",
            Some(1),
            at(100),
        );
        set(
            &mut c,
            types::ROLES_VERIFIED,
            false,
            "MissingRoles",
            "user x lacks backup",
            Some(2),
            at(200),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, at(100), "same status: time kept");
        assert_eq!(c[0].message, "user x lacks backup");
        assert_eq!(c[0].observed_generation, Some(2));
        set(
            &mut c,
            types::ROLES_VERIFIED,
            true,
            "RolesPresent",
            "all roles present",
            Some(2),
            at(300),
        );
        assert_eq!(c[0].last_transition_time, at(300));
        assert_eq!(c[0].status, "True");
    }
}
