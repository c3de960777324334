//! The in-process engine parts: [`LocalBus`] (every connection is on this node: the embedded
//! single node) and [`LocalUserGroups`] as a [`MembershipStore`] (memberships in memory, for unit
//! tests and tools).

use crate::Target;
use crate::{Applied, Call, ClientInvocation, EngineError, EngineFuture, Invoked, Listed, MembershipStore, NodeBus};
use std::sync::Arc;
use switchboard_hub::{LocalUserGroups, Registry};

/// A bus with one node: calls apply to this node's hubs, at once.
pub struct LocalBus {
    registry: Arc<Registry>,
}

impl LocalBus {
    pub fn new(registry: Arc<Registry>) -> Self {
        LocalBus { registry }
    }
}

impl NodeBus for LocalBus {
    fn call(&self, hub: &str, call: Call) -> EngineFuture<bool> {
        // A hub nobody connected to has no connections to apply anything to.
        let applied = self.registry.get(hub).map_or(Applied::NotFound, |hub| hub.apply(&call));
        let settled = (applied.found() && call.adds_interest()).then(|| self.registry.interest_settled());
        Box::pin(async move {
            if let Some(settled) = settled
                && !settled.await
            {
                return Err(EngineError::Timeout(
                    "routing to the connection was not updated everywhere in time".into(),
                ));
            }
            match applied {
                Applied::GroupLimit => Err(EngineError::GroupLimit),
                applied => Ok(applied.found()),
            }
        })
    }

    fn list(&self, hub: &str, target: Target) -> EngineFuture<Vec<Listed>> {
        let mut listed = self.registry.get(hub).map(|hub| hub.list(&target)).unwrap_or_default();
        listed.sort();
        Box::pin(std::future::ready(Ok(listed)))
    }

    fn http_address(&self, _node: u64) -> Option<String> {
        None
    }

    fn invoke(&self, hub: &str, invocation: ClientInvocation) -> EngineFuture<Invoked> {
        let (registry, hub) = (self.registry.clone(), hub.to_owned());
        Box::pin(async move { Ok(crate::invoke_here(&registry, &hub, &invocation).await) })
    }
}

impl MembershipStore for LocalUserGroups {
    fn add(&self, hub: &str, user: &str, group: &str, ttl_secs: Option<u64>) -> EngineFuture<()> {
        self.add_now(hub, user, group, ttl_secs);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove(&self, hub: &str, user: &str, group: &str) -> EngineFuture<()> {
        self.remove_now(hub, user, group);
        Box::pin(std::future::ready(Ok(())))
    }

    fn remove_user(&self, hub: &str, user: &str) -> EngineFuture<()> {
        self.remove_user_now(hub, user);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Deployment, Member};

    /// One node seen through three entry points: the in-process parts pass the suite. (Its
    /// "restart" keeps the same memory: G6 is the durable stores' to prove.)
    struct OneNode {
        registry: Arc<Registry>,
        store: Arc<LocalUserGroups>,
    }

    impl Deployment for OneNode {
        fn members(&self) -> Vec<Member> {
            let bus: Arc<dyn NodeBus> = Arc::new(LocalBus::new(self.registry.clone()));
            let member = Member { id: 1, registry: self.registry.clone(), store: self.store.clone(), bus };
            vec![member; 3]
        }

        async fn restart(&mut self) {}

        async fn stop(&mut self, _index: usize) {
            unreachable!("one node is never stopped by the suite")
        }
    }

    #[tokio::test]
    async fn the_in_process_engine_passes_the_contract() {
        let store = Arc::new(LocalUserGroups::default());
        let registry = Arc::new(Registry::with_user_groups(Default::default(), store.clone()));
        crate::contract::run(&mut OneNode { registry, store }).await;
    }
}
