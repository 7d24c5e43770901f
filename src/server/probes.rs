//! Active health checks: one task per backend that has a `health_check`, restarted with the
//! table on every reload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::task::JoinHandle;

use crate::backend::{BackendDef, HealthBoard, HealthCheck, UpstreamClient};
use crate::config::Config;

#[derive(Default)]
pub(super) struct Probes {
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Probes {
    pub(super) fn restart(
        &self,
        config: &Config,
        client: &UpstreamClient,
        health: &Arc<HealthBoard>,
    ) {
        self.stop();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for backend in config.backends.values() {
            let Some(check) = backend.health_check.clone() else {
                health.set_probe(&backend.id.0, None);
                continue;
            };
            tasks.push(runtime.spawn(probe_loop(
                backend.clone(),
                check,
                client.clone(),
                health.clone(),
            )));
        }
    }

    pub(super) fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

async fn probe_loop(
    backend: Arc<BackendDef>,
    check: HealthCheck,
    client: UpstreamClient,
    health: Arc<HealthBoard>,
) {
    let (mut passes, mut failures) = (0u32, 0u32);
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ok = probe_once(&backend, &check, &client).await;
        if ok {
            passes += 1;
            failures = 0;
            if passes >= check.rise {
                health.set_probe(&backend.id.0, Some(true));
            }
        } else {
            failures += 1;
            passes = 0;
            if failures >= check.fall {
                if failures == check.fall {
                    tracing::warn!(backend = %backend.id, "health check failing: backend taken out");
                }
                health.set_probe(&backend.id.0, Some(false));
            }
        }
    }
}

async fn probe_once(backend: &BackendDef, check: &HealthCheck, client: &UpstreamClient) -> bool {
    let attempt = client.send(
        backend,
        None,
        Method::GET,
        check.url.clone(),
        HeaderMap::new,
        Bytes::new(),
    );
    matches!(
        tokio::time::timeout(check.timeout.max(Duration::from_millis(1)), attempt).await,
        Ok(Ok(response)) if response.status.as_u16() < 500
    )
}
