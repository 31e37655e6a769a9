//! Why an engine pod cannot run, read from its status as `kubectl describe pod` shows it:
//! a pure function, so every case is tested without a cluster.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// How long a pod may wait for a node before that is reported: a scheduler binds a pod that
/// fits within seconds, and one that does not fit is marked Unschedulable by it.
pub const SCHEDULING_GRACE_SECS: i64 = 60;

/// A condition reason and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

/// Container waiting reasons that do not go away by waiting.
const STUCK: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The first problem of the first pod that has one (pods being deleted are skipped), as of
/// `now`.
pub fn problem<'a>(pods: impl IntoIterator<Item = &'a Pod>, now: Timestamp) -> Option<Problem> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find_map(|p| problem_of(p, now))
}

fn problem_of(pod: &Pod, now: Timestamp) -> Option<Problem> {
    let name = pod.metadata.name.as_deref().unwrap_or("the engine's pod");
    let unbound = pod.spec.as_ref().is_none_or(|s| s.node_name.is_none());
    let waited = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| now.as_second() - t.0.as_second())
        .unwrap_or(0);
    let unschedulable = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"));
    // The message names the grace, not the time waited: a message that changed at every
    // reconcile went stale in the status and cost a status write each time.
    if unbound && !unschedulable && waited > SCHEDULING_GRACE_SECS {
        return Some(Problem {
            reason: "EngineNotScheduled".into(),
            message: format!(
                "pod {name} has had no node for over {SCHEDULING_GRACE_SECS}s (since it was created), and no scheduler has said why; check that the cluster's scheduler runs, that a node matches spec.engine's nodeSelector, tolerations and affinity, and `kubectl describe pod {name}`"
            ),
        });
    }
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if !STUCK.contains(&reason) {
            continue;
        }
        let detail = waiting.message.as_deref().unwrap_or("no detail given");
        let hint = match reason {
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                "check spec.engine.image (or the operator's engine image) and the registry's pull secret"
            }
            "CrashLoopBackOff" => {
                "the engine keeps exiting; read its log with `kubectl logs` on the pod (--previous for the last crash)"
            }
            _ => "check the Secrets the engine's environment names and spec.engine",
        };
        let restarts = if c.restart_count > 0 {
            format!(", {} restarts", c.restart_count)
        } else {
            String::new()
        };
        return Some(Problem {
            reason: reason.to_string(),
            message: format!(
                "pod {name}, container {}: {reason}{restarts}: {detail}; {hint}",
                c.name
            ),
        });
    }
    for cond in status.conditions.iter().flatten() {
        if cond.type_ == "PodScheduled"
            && cond.status == "False"
            && cond.reason.as_deref() == Some("Unschedulable")
        {
            return Some(Problem {
                reason: "Unschedulable".into(),
                message: format!(
                    "pod {name} cannot be scheduled: {}; check spec.engine's nodeSelector, tolerations, affinity and resources",
                    cond.message.as_deref().unwrap_or("no node fits")
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "move-engine-abc" },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_running_or_starting_pod_has_no_problem() {
        let running = pod(json!({ "containerStatuses": [{
            "name": "engine", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": { "running": {} } }] }));
        let creating = pod(json!({ "containerStatuses": [{
            "name": "engine", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ContainerCreating" } } }] }));
        assert_eq!(problem([&running, &creating], Timestamp::now()), None);
    }

    #[test]
    fn pull_failures_crash_loops_and_unschedulable_pods_are_named() {
        let pull = pod(json!({ "containerStatuses": [{
            "name": "engine", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope:1\"" } } }] }));
        let now = Timestamp::now();
        let p = problem([&pull], now).unwrap();
        assert_eq!(p.reason, "ImagePullBackOff");
        assert!(p.message.contains("nope:1") && p.message.contains("spec.engine.image"));

        let crash = pod(json!({ "containerStatuses": [{
            "name": "engine", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
            "state": { "waiting": { "reason": "CrashLoopBackOff" } } }] }));
        let p = problem([&crash], now).unwrap();
        assert_eq!(p.reason, "CrashLoopBackOff");
        assert!(p.message.contains("4 restarts") && p.message.contains("kubectl logs"));

        let pending = pod(json!({ "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity" }] }));
        let p = problem([&pending], now).unwrap();
        assert_eq!(p.reason, "Unschedulable");
        assert!(p.message.contains("node affinity"));
    }

    #[test]
    fn a_pod_no_scheduler_binds_is_reported_after_a_grace_period() {
        let created = Timestamp::from_second(1_000_000).unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "move-engine-abc", "creationTimestamp": created.to_string() },
            "spec": { "containers": [{ "name": "engine" }] },
            "status": { "phase": "Pending" }
        }))
        .unwrap();
        let at = |s: i64| Timestamp::from_second(1_000_000 + s).unwrap();
        assert_eq!(problem([&pod], at(30)), None, "a scheduler gets its time");
        let p = problem([&pod], at(90)).unwrap();
        assert_eq!(p.reason, "EngineNotScheduled");
        assert!(
            p.message.contains("over 60s") && p.message.contains("scheduler"),
            "{}",
            p.message
        );
        // The same words later: a message that changes at every poll goes stale and costs a
        // status write each time.
        assert_eq!(problem([&pod], at(900)).unwrap().message, p.message);
        let mut bound = pod.clone();
        bound.spec.as_mut().unwrap().node_name = Some("n1".into());
        assert_eq!(problem([&bound], at(90)), None);
    }
}
