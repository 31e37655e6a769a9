//! Running a sync: the job's context from the start options (the scope compiled once, and
//! refused rather than widened), the job itself, and the monitor that measures latencies, the
//! source's time and its oplog window for `/progress`.

use crate::engine::sync::{context, job};
#[allow(unused_imports)]
use crate::engine::*;

impl Engine {
    fn ctx(&self, options: &StartOptions, scope: Scope) -> Ctx {
        let destination = self.client(options.destination).clone();
        Ctx {
            source: self.client(options.source).clone(),
            store: Store::fenced(&destination, &self.lease.me.token),
            fence: self.lease.fence.clone(),
            destination,
            scope: Arc::new(scope),
            options: options.clone(),
            status: self.status.clone(),
            tuning: self.tuning,
            blocker: self.blocker.clone(),
            write_blocking: self.status.lock().write_blocking,
            verifier: (options.verification_enabled() && !self.config.disable_verification).then(
                || {
                    let cluster = |label: ClusterLabel| {
                        crate::verify::Cluster::new(
                            label.as_str(),
                            self.uri(label).clone(),
                            self.client(label).clone(),
                        )
                    };
                    Arc::new(context::Clusters {
                        source: cluster(options.source),
                        destination: cluster(options.destination),
                    })
                },
            ),
        }
    }

    /// Starts the job for `options`, validated again (they come from `/start` or from the
    /// destination): a scope that no longer compiles refuses the job rather than widening it.
    pub(in crate::engine) fn spawn_job(
        self: &Arc<Self>,
        options: &StartOptions,
    ) -> Result<JoinHandle<()>, crate::contract::options::InvalidStart> {
        let scope = options.validate()?;
        let ctx = self.ctx(options, scope);
        // Before the job runs, so that no `/progress` between here and the verifier's first
        // report shows `canCommit` true for a sync whose verifier has not started yet.
        if ctx.verifier.is_some() {
            self.status
                .lock()
                .verification
                .get_or_insert_with(Default::default);
        }
        let me = self.clone();
        Ok(tokio::spawn(async move {
            job::supervise(ctx, move |t| me.scrub(t)).await
        }))
    }

    /// Pings both clusters every few seconds for `/progress` latencies, and refreshes the
    /// source's latest time for lag.
    pub(in crate::engine) fn spawn_monitor(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut oplog_checked: Option<Instant> = None;
            loop {
                let Some(engine) = me.upgrade() else { return };
                for label in [ClusterLabel::Cluster0, ClusterLabel::Cluster1] {
                    let started = Instant::now();
                    let r = engine
                        .client(label)
                        .database("admin")
                        .run_command(doc! { "ping": 1 })
                        .await;
                    let key = format!("reach-{}", label.as_str());
                    match r {
                        Ok(_) => {
                            engine.status.lock().ping_ms[label.index()] =
                                Some(started.elapsed().as_millis() as i64);
                            engine.status.clear_warning(&key);
                        }
                        Err(e) => {
                            engine.status.lock().ping_ms[label.index()] = Some(-1);
                            engine.status.warn(
                                &key,
                                format!(
                                    "cannot reach {} ({}): {}; retrying",
                                    label.as_str(),
                                    engine.uri(label).hosts(),
                                    engine.scrub(&crate::mongo::describe(&e))
                                ),
                            );
                        }
                    }
                }
                let source = engine.status.lock().options.as_ref().map(|o| o.source);
                if let Some(src) = source {
                    if let Ok(ts) = crate::mongo::cluster_time(engine.client(src)).await {
                        engine.status.saw_source_time(ts);
                    }
                    // The oplog's start moves slowly and reading it can cost the server a scan:
                    // once a minute is plenty (mongosync refreshes it every five).
                    if oplog_checked.is_none_or(|t| t.elapsed() >= OPLOG_REFRESH) {
                        oplog_checked = Some(Instant::now());
                        if let Some(start) =
                            preflight::checks::oplog_start(engine.client(src)).await
                        {
                            let mut s = engine.status.lock();
                            s.oplog_first_secs = Some(start.first_secs);
                            s.oplog_rolled_over = start.rolled_over;
                        }
                    }
                }
                engine.status.sample_lag();
                engine.status.sample_copy();
                drop(engine);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
}
