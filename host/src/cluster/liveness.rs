//! Which nodes are alive, and what happens to the sockets of one that died.
//!
//! Every node refreshes a heartbeat key in Redis and records its connected
//! sockets. Every node also watches the others: when a node's heartbeat has
//! expired (it crashed, or lost its network), one surviving node claims it,
//! runs the plugins' `on-disconnect` for each of its sockets (so presence
//! stays right cluster-wide), and forgets it. A node shutting down handles
//! its own sockets' disconnects, then drops its heartbeat ([`NodeLiveness::leave`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::{
    Client, Expiration, HashesInterface, KeysInterface, SetOptions, SetsInterface,
};
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use crate::bindings::Conn;
use crate::runtime::now_ms;

/// What a node tells the others about itself with each heartbeat, for
/// `GET /api/v1/nodes`: enough to see a half-finished rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub id: String,
    pub started_at_ms: u64,
    /// Sockets connected to it.
    pub sockets: usize,
    /// The running version (SHA-256) of each of its plugins.
    pub plugins: std::collections::BTreeMap<String, String>,
    /// When it last beat, in ms since the Unix epoch.
    pub beat_at_ms: u64,
}

/// Builds this node's [`NodeReport`] at each heartbeat.
pub type Reporter = Arc<dyn Fn() -> NodeReport + Send + Sync>;

/// How often a node refreshes its heartbeat and looks for dead nodes.
const BEAT: Duration = Duration::from_secs(1);
/// A node whose heartbeat is older than this is dead.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long one node holds the claim to clean up after a dead one.
const CLAIM: Duration = Duration::from_secs(30);

/// A socket as recorded in Redis.
#[derive(Serialize, Deserialize)]
pub struct RecordedConn {
    socket_id: String,
    namespace: String,
    auth: String,
    user_id: Option<String>,
}

impl From<&Conn> for RecordedConn {
    fn from(conn: &Conn) -> Self {
        Self {
            socket_id: conn.socket_id.clone(),
            namespace: conn.namespace.clone(),
            auth: conn.auth.clone(),
            user_id: conn.user_id.clone(),
        }
    }
}

impl From<RecordedConn> for Conn {
    fn from(recorded: RecordedConn) -> Self {
        Self {
            socket_id: recorded.socket_id,
            namespace: recorded.namespace,
            auth: recorded.auth,
            user_id: recorded.user_id,
        }
    }
}

pub struct NodeLiveness {
    client: Client,
    prefix: String,
    node_id: String,
    started_at_ms: u64,
    /// The heartbeat task, stopped when the node leaves.
    beating: Mutex<Option<AbortHandle>>,
}

impl NodeLiveness {
    pub fn new(client: Client, prefix: &str) -> Arc<Self> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Arc::new(Self {
            client,
            prefix: prefix.to_owned(),
            node_id: format!("{:x}-{:x}", started.as_nanos(), std::process::id()),
            started_at_ms: u64::try_from(started.as_millis()).unwrap_or(u64::MAX),
            beating: Mutex::new(None),
        })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn heartbeat_key(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }

    /// Where a node's [`NodeReport`] is, for as long as its heartbeat.
    fn report_key(&self, node: &str) -> String {
        format!("{}:node:{node}:report", self.prefix)
    }

    /// A report of this node as it is now, its id and start filled in.
    pub fn report(
        &self,
        sockets: usize,
        plugins: std::collections::BTreeMap<String, String>,
    ) -> NodeReport {
        NodeReport {
            id: self.node_id.clone(),
            started_at_ms: self.started_at_ms,
            sockets,
            plugins,
            beat_at_ms: now_ms(),
        }
    }

    /// The reports of the live nodes, this one included, oldest first.
    pub async fn nodes(&self) -> Result<Vec<NodeReport>, fred::error::Error> {
        let nodes: Vec<String> = self.client.smembers(self.nodes_key()).await?;
        let mut reports = Vec::with_capacity(nodes.len());
        for node in nodes {
            let report: Option<String> = self.client.get(self.report_key(&node)).await?;
            if let Some(report) = report.and_then(|json| serde_json::from_str(&json).ok()) {
                reports.push(report);
            }
        }
        reports.sort_by_key(|report: &NodeReport| (report.started_at_ms, report.id.clone()));
        Ok(reports)
    }

    fn sockets_key(&self, node: &str) -> String {
        format!("{}:node:{node}:sockets", self.prefix)
    }

    /// Records a connected socket of this node.
    pub async fn connected(&self, conn: &Conn) {
        let Ok(json) = serde_json::to_string(&RecordedConn::from(conn)) else {
            return;
        };
        let recorded: Result<(), _> = self
            .client
            .hset(
                self.sockets_key(&self.node_id),
                (conn.socket_id.as_str(), json),
            )
            .await;
        if let Err(error) = recorded {
            tracing::warn!(socket = %conn.socket_id, "cannot record the socket in Redis: {error}");
        }
    }

    /// Forgets a socket whose disconnect this node has handled.
    pub async fn disconnected(&self, conn: &Conn) {
        let forgotten: Result<(), _> = self
            .client
            .hdel(self.sockets_key(&self.node_id), conn.socket_id.as_str())
            .await;
        if let Err(error) = forgotten {
            tracing::warn!(socket = %conn.socket_id, "cannot forget the socket in Redis: {error}");
        }
    }

    /// Beats (with `report`) and watches until the process ends; `lost`
    /// handles the sockets of a dead node this node claimed (the node's id,
    /// its sockets).
    pub fn run<F, Fut>(self: Arc<Self>, report: Reporter, lost: F)
    where
        F: Fn(String, Vec<Conn>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let liveness = self.clone();
        let beating = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(BEAT);
            loop {
                ticker.tick().await;
                if let Err(error) = self.beat(&report()).await {
                    tracing::warn!("cannot refresh this node's heartbeat: {error}");
                    continue;
                }
                if let Err(error) = self.reap(&lost).await {
                    tracing::warn!("cannot check the other nodes' heartbeats: {error}");
                }
            }
        });
        *liveness
            .beating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(beating.abort_handle());
    }

    /// Whether another node is alive (its heartbeat fresh). False when Redis
    /// cannot tell.
    pub async fn others_alive(&self) -> bool {
        let nodes: Vec<String> = match self.client.smembers(self.nodes_key()).await {
            Ok(nodes) => nodes,
            Err(_) => return false,
        };
        for node in nodes.iter().filter(|node| **node != self.node_id) {
            if let Ok(true) = self.client.exists(self.heartbeat_key(node)).await {
                return true;
            }
        }
        false
    }

    /// Stops beating and drops the heartbeat, for a node shutting down that
    /// has handled its sockets: the others take it as gone at once.
    pub async fn leave(&self) {
        let beating = self
            .beating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(beating) = beating {
            beating.abort();
        }
        let left: Result<(), _> = self
            .client
            .del(vec![
                self.heartbeat_key(&self.node_id),
                self.report_key(&self.node_id),
            ])
            .await;
        if let Err(error) = left {
            tracing::warn!(
                "cannot drop this node's heartbeat: {error}; the others will notice it gone"
            );
        }
    }

    async fn beat(&self, report: &NodeReport) -> Result<(), fred::error::Error> {
        let timeout = i64::try_from(HEARTBEAT_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        if let Ok(report) = serde_json::to_string(report) {
            let () = self
                .client
                .set(
                    self.report_key(&self.node_id),
                    report,
                    Some(Expiration::PX(timeout)),
                    None,
                    false,
                )
                .await?;
        }
        let () = self
            .client
            .set(
                self.heartbeat_key(&self.node_id),
                "1",
                Some(Expiration::PX(timeout)),
                None,
                false,
            )
            .await?;
        self.client
            .sadd(self.nodes_key(), self.node_id.as_str())
            .await
    }

    async fn reap<F, Fut>(&self, lost: &F) -> Result<(), fred::error::Error>
    where
        F: Fn(String, Vec<Conn>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let nodes: Vec<String> = self.client.smembers(self.nodes_key()).await?;
        for node in nodes.iter().filter(|node| **node != self.node_id) {
            let alive: bool = self.client.exists(self.heartbeat_key(node)).await?;
            if alive {
                continue;
            }
            let claim = format!("{}:node:{node}:reaper", self.prefix);
            let claim_ms = i64::try_from(CLAIM.as_millis()).unwrap_or(i64::MAX);
            let claimed: Option<String> = self
                .client
                .set(
                    claim,
                    self.node_id.as_str(),
                    Some(Expiration::PX(claim_ms)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if claimed.is_none() {
                continue; // another node is cleaning up after it
            }
            let sockets: Vec<String> = self.client.hvals(self.sockets_key(node)).await?;
            let conns: Vec<Conn> = sockets
                .iter()
                .filter_map(|json| serde_json::from_str::<RecordedConn>(json).ok())
                .map(Conn::from)
                .collect();
            if conns.is_empty() {
                tracing::info!(node = %node, "node left the cluster");
            } else {
                tracing::warn!(node = %node, sockets = conns.len(), "node stopped beating; disconnecting its sockets");
                lost(node.clone(), conns).await;
            }
            let () = self.client.del(self.sockets_key(node)).await?;
            let () = self.client.srem(self.nodes_key(), node.as_str()).await?;
        }
        Ok(())
    }
}
