//! `/healthz`, `/readyz` and `/metrics`: unauthenticated, outside `/api`, documented in the spec
//! under the `Operations` tag.

use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem_openapi::payload::PlainText;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use todo_store::Store;

use crate::Limits;
use crate::payload::JsonOut;
use crate::problem::{ApiError, MetricsErrors, Problem, ReadyErrors};

#[derive(Tags)]
enum OpsTags {
    /// Probes for load balancers and orchestrators; no token needed.
    Operations,
}

/// The body of a successful probe: `{"status":"ok"}`.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct HealthStatus {
    /// Always `ok`.
    pub status: String,
}

/// A successful probe.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Up.
    #[oai(status = 200, content_type = "application/json")]
    Ok(JsonOut<HealthStatus>),
}

fn ok() -> HealthResponse {
    HealthResponse::Ok(JsonOut(HealthStatus {
        status: "ok".to_owned(),
    }))
}

/// The metrics page.
#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Prometheus text exposition format 0.0.4.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

/// The probes, over the store `/readyz` pings, and the metrics page.
pub struct OpsApi {
    pub(crate) store: Store,
    pub(crate) readiness_timeout: Duration,
    pub(crate) limits: Arc<Limits>,
}

#[OpenApi]
impl OpsApi {
    /// Liveness
    ///
    /// 200 while the process serves requests; touches nothing else.
    #[oai(
        path = "/healthz",
        method = "get",
        operation_id = "healthz",
        tag = "OpsTags::Operations"
    )]
    async fn healthz(&self) -> HealthResponse {
        ok()
    }

    /// Readiness
    ///
    /// 200 when the database answers a ping within the readiness timeout (2 s by default),
    /// else 503.
    #[oai(
        path = "/readyz",
        method = "get",
        operation_id = "readyz",
        tag = "OpsTags::Operations"
    )]
    async fn readyz(&self) -> Result<HealthResponse, ApiError<ReadyErrors>> {
        match tokio::time::timeout(self.readiness_timeout, self.store.ping()).await {
            Ok(Ok(())) => Ok(ok()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness check failed");
                Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unreachable",
                )
                .into())
            }
            Err(_) => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer in time",
            )
            .into()),
        }
    }

    /// Metrics (Prometheus)
    ///
    /// Requests by method, route template and status; latency histograms; open connections;
    /// requests in flight and queued; database pool use. No token. 404 when the host
    /// application installed its own `metrics` recorder (scrape that one instead).
    #[oai(
        path = "/metrics",
        method = "get",
        operation_id = "metrics",
        tag = "OpsTags::Operations"
    )]
    async fn metrics(&self) -> Result<MetricsResponse, ApiError<MetricsErrors>> {
        match crate::metrics::render(&self.store, &self.limits) {
            Some(text) => Ok(MetricsResponse::Ok(PlainText(text))),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "the host application installed its own metrics recorder; scrape it there",
            )
            .into()),
        }
    }
}
