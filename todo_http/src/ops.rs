//! `/healthz` and `/readyz`: unauthenticated, outside `/api`, documented in the spec under the
//! `Operations` tag.

use std::time::Duration;

use poem::http::StatusCode;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use todo_store::Store;

use crate::payload::JsonOut;
use crate::problem::{ApiError, Problem, ReadyErrors};

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

/// The probes, over the store `/readyz` pings.
pub struct OpsApi {
    pub(crate) store: Store,
    pub(crate) readiness_timeout: Duration,
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
}
