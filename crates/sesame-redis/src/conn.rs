//! One connection type over a single Redis and a Redis Cluster, so the store has one code path.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisFuture, RedisResult, Value};

/// The connection a store talks through. Both variants are cheap handles onto a shared,
/// multiplexed connection (cloning one does not open a socket), and both reconnect by themselves.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (or a proxy in front of several), through an auto-reconnecting manager.
    Single(ConnectionManager),
    /// A Redis Cluster: commands are routed to the master owning their key's slot.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Where a full `SCAN` must go: the one server, or every master of the cluster (a `SCAN` on one
    /// cluster node only sees the keys of that node's slots).
    pub(crate) async fn scan_targets(&mut self) -> RedisResult<Vec<ScanTarget>> {
        match self {
            Self::Single(_) => Ok(vec![ScanTarget::Server]),
            Self::Cluster(conn) => {
                let slots = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                Ok(master_routes(&slots)
                    .into_iter()
                    .map(ScanTarget::Master)
                    .collect())
            }
        }
    }

    /// Runs one `SCAN` step on `target`.
    pub(crate) async fn scan_step(
        &mut self,
        target: &ScanTarget,
        cmd: Cmd,
    ) -> RedisResult<(u64, Vec<Vec<u8>>)> {
        match (self, target) {
            (Self::Cluster(conn), ScanTarget::Master(route)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                let value = conn.route_command(cmd, routing).await?;
                Ok(redis::from_redis_value(value)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// One place a listing scans.
#[derive(Clone, Debug)]
pub(crate) enum ScanTarget {
    /// The single server.
    Server,
    /// The master owning a slot (named by a slot it owns, so the driver's slot map finds it).
    Master(Route),
}

/// One route per master in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id?], replicas..]..]`.
fn master_routes(slots: &Value) -> Vec<Route> {
    let mut seen: Vec<(Vec<u8>, i64)> = Vec::new();
    let mut routes = Vec::new();
    let Value::Array(ranges) = slots else {
        return routes;
    };
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (items.first(), items.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(host)) => host.clone(),
            Some(Value::SimpleString(host)) => host.clone().into_bytes(),
            _ => continue,
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        let Ok(slot) = u16::try_from(*start) else {
            continue;
        };
        // A master owning several ranges appears once per range: scan it once.
        if seen.iter().any(|(h, p)| *h == host && p == port) {
            continue;
        }
        seen.push((host, *port));
        routes.push(Route::new(slot, SlotAddr::Master));
    }
    routes
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn one_route_per_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(99), node("a", 1)]),
            Value::Array(vec![Value::Int(100), Value::Int(199), node("b", 2)]),
            Value::Array(vec![Value::Int(200), Value::Int(299), node("a", 1)]),
            Value::Array(vec![
                Value::Int(300),
                Value::Int(16383),
                node("c", 3),
                node("replica", 4),
            ]),
        ]);
        let routes = master_routes(&reply);
        assert_eq!(
            routes,
            vec![
                Route::new(0, SlotAddr::Master),
                Route::new(100, SlotAddr::Master),
                Route::new(300, SlotAddr::Master),
            ]
        );
        assert!(master_routes(&Value::Nil).is_empty());
    }
}
