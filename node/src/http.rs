//! The admin HTTP port: `/health` (the process answers), `/ready` (a member
//! of a cluster whose meta group has a leader) and `/metrics` (Prometheus).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use courier_raft::META_GROUP;

use crate::cluster::Node;

pub(crate) async fn serve(listener: tokio::net::TcpListener, node: Node, mut stop: tokio::sync::watch::Receiver<bool>) {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::warn!("admin http server stopped: {e}");
    }
}

async fn ready(State(node): State<Node>) -> (StatusCode, String) {
    match node.raft() {
        Ok(m) => match m.views().iter().find(|v| v.group == META_GROUP).and_then(|v| v.leader) {
            Some(leader) => (StatusCode::OK, format!("ready: node {} (meta leader {leader})\n", m.id())),
            None => (StatusCode::SERVICE_UNAVAILABLE, "no meta leader\n".into()),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics(State(node): State<Node>) -> String {
    if let Ok(m) = node.raft() {
        node.metrics().observe(m);
    }
    node.metrics().observe_process();
    node.metrics().render()
}
