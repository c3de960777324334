//! [`Router`]: which nodes a send must reach.

use switchboard_grpc::fanout::v1::delivery::Target;
use switchboard_hub::owner_of;

/// Resolves a send's target to the nodes that must get it.
///
/// | target | nodes |
/// |---|---|
/// | connection | the owner named in the connection id ([`owner_of`]), if it is among the live nodes |
/// | broadcast, user, group | every node passed in |
///
/// Nodes are `(node id, gRPC address)`; the caller passes the live nodes that may hold the
/// targets (for a user or group, the nodes whose routing interest holds it: see
/// [`ClusterBus`](crate::ClusterBus)), this node included (a [`FanoutClient`](crate::FanoutClient)
/// delivers to its own node without gRPC).
#[derive(Debug, Clone, Copy, Default)]
pub struct Router;

impl Router {
    /// The nodes that must get a send to `target`, in the order of `nodes`. Empty for a
    /// connection whose id names no node, or a node that is not live.
    pub fn route<'a>(target: &Target, nodes: &'a [(u64, String)]) -> Vec<(u64, &'a str)> {
        match target {
            Target::ConnectionId(id) => Self::owner(id, nodes).into_iter().collect(),
            Target::All(_) | Target::User(_) | Target::Group(_) => {
                nodes.iter().map(|(id, addr)| (*id, addr.as_str())).collect()
            }
        }
    }

    /// The live node that owns `connection_id`, for connection-scoped calls; `None` when the id
    /// names no node or that node is not among `nodes`.
    pub fn owner<'a>(connection_id: &str, nodes: &'a [(u64, String)]) -> Option<(u64, &'a str)> {
        let owner = owner_of(connection_id)?;
        nodes.iter().find(|(id, _)| *id == owner).map(|(id, addr)| (*id, addr.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_grpc::fanout::v1::Broadcast;
    use switchboard_hub::new_connection_id;

    fn nodes() -> Vec<(u64, String)> {
        vec![(1, "a:1".into()), (2, "b:2".into()), (3, "c:3".into())]
    }

    #[test]
    fn connections_go_to_their_owner_only() {
        let nodes = nodes();
        let id = new_connection_id(2);
        assert_eq!(Router::route(&Target::ConnectionId(id.clone()), &nodes), vec![(2, "b:2")]);
        assert_eq!(Router::owner(&id, &nodes), Some((2, "b:2")));
        assert!(Router::route(&Target::ConnectionId(new_connection_id(9)), &nodes).is_empty());
        assert!(Router::route(&Target::ConnectionId("no-owner".into()), &nodes).is_empty());
    }

    #[test]
    fn everything_else_goes_everywhere() {
        let nodes = nodes();
        let all = vec![(1, "a:1"), (2, "b:2"), (3, "c:3")];
        assert_eq!(Router::route(&Target::All(Broadcast {}), &nodes), all);
        assert_eq!(Router::route(&Target::User("u".into()), &nodes), all);
        assert_eq!(Router::route(&Target::Group("g".into()), &nodes), all);
    }
}
