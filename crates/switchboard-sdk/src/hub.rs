//! [`HubClient`]: one method per data-plane route of the 2022-06-01 API (azure-serverless.md §4.3).

use crate::SdkError;
use crate::client::Shared;
use crate::negotiate::{NegotiateResponse, client_hub_name};
use crate::retry::ApiKind;
use crate::route::RestPath;
use crate::transport::Reply;
use bytes::Bytes;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// REST operations on one hub, optionally inside an application (`app_hub`).
///
/// Obtained from [`ServiceClient::hub`](crate::ServiceClient::hub). Every call sends
/// `api-version=2022-06-01`, a fresh server token whose `aud` is the request URL without its
/// query, and escapes user, group and connection ids as single path segments.
#[derive(Debug, Clone)]
pub struct HubClient {
    shared: Arc<Shared>,
    /// Lower-cased hub name as it goes into the path.
    hub: String,
    /// Lower-cased application name, sent as the `application` query.
    application: Option<String>,
}

impl HubClient {
    pub(crate) fn new(shared: Arc<Shared>, hub: &str) -> Self {
        Self { shared, hub: hub.to_lowercase(), application: None }
    }

    /// Returns this hub inside `application`: REST calls add `application=<app>` and clients
    /// connect to hub `<app>_<hub>`.
    pub fn with_application(mut self, application: &str) -> Self {
        self.application = Some(application.to_lowercase());
        self
    }

    /// Returns the hub name clients use: `app_hub` with an application, else `hub`.
    pub fn client_hub(&self) -> String {
        client_hub_name(&self.hub, self.application.as_deref())
    }

    /// Mints the negotiate answer for a client of this hub, see
    /// [`ServiceClient::negotiate`](crate::ServiceClient::negotiate).
    pub fn negotiate(
        &self,
        user_id: Option<&str>,
        claims: &[(String, String)],
        lifetime: Duration,
    ) -> NegotiateResponse {
        self.shared.negotiate(&self.client_hub(), user_id, claims, lifetime)
    }

    /// Calls `target` with `args` on every client of the hub except `excluded` connections.
    pub async fn broadcast(&self, target: &str, args: &[Value], excluded: &[&str]) -> Result<(), SdkError> {
        let path = self.path()?.literal(":send").with_excluded(excluded);
        self.send(&path, target, args).await
    }

    /// Calls `target` on every connection of `user`.
    pub async fn send_to_user(&self, user: &str, target: &str, args: &[Value]) -> Result<(), SdkError> {
        let path = self.path()?.literal("users").segment(user)?.literal(":send");
        self.send(&path, target, args).await
    }

    /// Calls `target` on one connection.
    pub async fn send_to_connection(&self, connection_id: &str, target: &str, args: &[Value]) -> Result<(), SdkError> {
        let path = self.path()?.literal("connections").segment(connection_id)?.literal(":send");
        self.send(&path, target, args).await
    }

    /// Calls `target` on every connection in `group` except `excluded` connections.
    pub async fn send_to_group(
        &self,
        group: &str,
        target: &str,
        args: &[Value],
        excluded: &[&str],
    ) -> Result<(), SdkError> {
        let path = self.path()?.literal("groups").segment(group)?.literal(":send").with_excluded(excluded);
        self.send(&path, target, args).await
    }

    /// Closes every connection of the hub except `excluded`; `reason` reaches clients as the
    /// Close message's `error`.
    pub async fn close_connections(&self, excluded: &[&str], reason: Option<&str>) -> Result<(), SdkError> {
        let path = self.path()?.literal(":closeConnections").with_excluded(excluded).with_reason(reason);
        self.expect_success(Method::POST, &path).await
    }

    /// Closes every connection in `group` except `excluded`.
    pub async fn close_group_connections(
        &self,
        group: &str,
        excluded: &[&str],
        reason: Option<&str>,
    ) -> Result<(), SdkError> {
        let path = self.path()?.literal("groups").segment(group)?.literal(":closeConnections");
        self.expect_success(Method::POST, &path.with_excluded(excluded).with_reason(reason)).await
    }

    /// Closes every connection of `user` except `excluded`.
    pub async fn close_user_connections(
        &self,
        user: &str,
        excluded: &[&str],
        reason: Option<&str>,
    ) -> Result<(), SdkError> {
        let path = self.path()?.literal("users").segment(user)?.literal(":closeConnections");
        self.expect_success(Method::POST, &path.with_excluded(excluded).with_reason(reason)).await
    }

    /// Closes one connection. A connection that no longer exists (404 with
    /// `Warning.Connection.NotExisted`) counts as closed, as in the Azure SDK.
    pub async fn close_connection(&self, connection_id: &str, reason: Option<&str>) -> Result<(), SdkError> {
        let path = self.path()?.literal("connections").segment(connection_id)?.with_reason(reason);
        let reply = self.call(Method::DELETE, &path).await?;
        let already_gone = reply.status == 404 && reply.error_code.as_deref() == Some("Warning.Connection.NotExisted");
        if reply.is_success() || already_gone { Ok(()) } else { Err(reply.into_error()) }
    }

    /// Returns whether the connection is live in this hub.
    pub async fn connection_exists(&self, connection_id: &str) -> Result<bool, SdkError> {
        self.exists(self.path()?.literal("connections").segment(connection_id)?).await
    }

    /// Returns whether `user` has at least one live connection in this hub.
    pub async fn user_exists(&self, user: &str) -> Result<bool, SdkError> {
        self.exists(self.path()?.literal("users").segment(user)?).await
    }

    /// Returns whether `group` has at least one connection.
    pub async fn group_exists(&self, group: &str) -> Result<bool, SdkError> {
        self.exists(self.path()?.literal("groups").segment(group)?).await
    }

    /// Adds a live connection to `group`; the membership ends with the connection.
    /// Fails with 404 `Error.Connection.NotExisted` for an unknown connection.
    pub async fn add_connection_to_group(&self, connection_id: &str, group: &str) -> Result<(), SdkError> {
        let path = self.path()?.literal("groups").segment(group)?.literal("connections").segment(connection_id)?;
        self.expect_success(Method::PUT, &path).await
    }

    /// Removes a connection from `group`.
    pub async fn remove_connection_from_group(&self, connection_id: &str, group: &str) -> Result<(), SdkError> {
        let path = self.path()?.literal("groups").segment(group)?.literal("connections").segment(connection_id)?;
        self.expect_success(Method::DELETE, &path).await
    }

    /// Removes a connection from every group it joined.
    pub async fn remove_connection_from_all_groups(&self, connection_id: &str) -> Result<(), SdkError> {
        let path = self.path()?.literal("connections").segment(connection_id)?.literal("groups");
        self.expect_success(Method::DELETE, &path).await
    }

    /// Adds `user` to `group`, including connections the user opens later.
    ///
    /// `ttl` bounds the membership (whole seconds; `Some(ZERO)` adds only the user's current
    /// connections); `None` lets the service apply its default (one year).
    pub async fn add_user_to_group(&self, user: &str, group: &str, ttl: Option<Duration>) -> Result<(), SdkError> {
        let mut path = self.path()?.literal("users").segment(user)?.literal("groups").segment(group)?;
        if let Some(ttl) = ttl {
            path = path.with_query("ttl", &ttl.as_secs().to_string());
        }
        self.expect_success(Method::PUT, &path).await
    }

    /// Removes `user` (and its connections) from `group`.
    pub async fn remove_user_from_group(&self, user: &str, group: &str) -> Result<(), SdkError> {
        let path = self.path()?.literal("users").segment(user)?.literal("groups").segment(group)?;
        self.expect_success(Method::DELETE, &path).await
    }

    /// Removes `user` from every group.
    pub async fn remove_user_from_all_groups(&self, user: &str) -> Result<(), SdkError> {
        let path = self.path()?.literal("users").segment(user)?.literal("groups");
        self.expect_success(Method::DELETE, &path).await
    }

    /// Returns whether `user` is a member of `group` (asked with `GET`, like the Azure SDK).
    pub async fn is_user_in_group(&self, user: &str, group: &str) -> Result<bool, SdkError> {
        let path = self.path()?.literal("users").segment(user)?.literal("groups").segment(group)?;
        let reply = self.call(Method::GET, &path).await?;
        existence(reply)
    }

    fn path(&self) -> Result<RestPath, SdkError> {
        RestPath::hub(&self.hub, self.application.as_deref())
    }

    async fn send(&self, path: &RestPath, target: &str, args: &[Value]) -> Result<(), SdkError> {
        if target.is_empty() {
            return Err(SdkError::InvalidArgument("the target method name must not be empty".into()));
        }
        let body = serde_json::to_vec(&json!({"target": target, "arguments": args}))
            .expect("serializing JSON values cannot fail");
        let reply = self.shared.transport.call(Method::POST, path, Some(Bytes::from(body)), ApiKind::Message).await?;
        if reply.is_success() { Ok(()) } else { Err(reply.into_error()) }
    }

    async fn call(&self, method: Method, path: &RestPath) -> Result<Reply, SdkError> {
        self.shared.transport.call(method, path, None, ApiKind::Other).await
    }

    async fn expect_success(&self, method: Method, path: &RestPath) -> Result<(), SdkError> {
        let reply = self.call(method, path).await?;
        if reply.is_success() { Ok(()) } else { Err(reply.into_error()) }
    }

    async fn exists(&self, path: RestPath) -> Result<bool, SdkError> {
        existence(self.call(Method::HEAD, &path).await?)
    }
}

/// 2xx → `true`, 404 → `false`, anything else is an error.
fn existence(reply: Reply) -> Result<bool, SdkError> {
    match reply.status {
        200..=299 => Ok(true),
        404 => Ok(false),
        _ => Err(reply.into_error()),
    }
}
