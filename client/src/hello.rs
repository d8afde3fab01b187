//! `dupla hello NAME...`: the socket-basics exercise over gRPC. The names
//! stream to a node's Greeter and each `Hola <name>` streams back, in order.
//!
//! The node is the entry server (the `--server` given, or the least busy
//! `up` server), or the manager when no storage server can be reached:
//! every node serves the Greeter.

use crate::output::Output;
use crate::session::{rpc_error, Client, Role};
use dupla::v1::greeter_client::GreeterClient;
use dupla::v1::HelloRequest;
use dupla::Result;
use tonic::transport::Channel;

impl Client {
    /// Greet each of `names`; returns the replies in order.
    pub async fn hello(&self, names: &[String]) -> Result<Vec<String>> {
        let (addr, role, mut greeter) = self.greeter().await?;
        let requests: Vec<HelloRequest> = names
            .iter()
            .map(|name| HelloRequest { name: name.clone() })
            .collect();
        let mut replies = greeter
            .hello(self.request(tokio_stream::iter(requests)))
            .await
            .map_err(|s| rpc_error(role, &addr, s))?
            .into_inner();
        let mut out = Vec::with_capacity(names.len());
        while let Some(reply) = replies
            .message()
            .await
            .map_err(|s| rpc_error(role, &addr, s))?
        {
            out.push(reply.message);
        }
        Ok(out)
    }

    /// The Greeter to talk to: an entry server if one answers, else the manager.
    async fn greeter(&self) -> Result<(String, Role, GreeterClient<Channel>)> {
        if let Some(server) = self.server_addr() {
            let (addr, greeter) = self.connect_greeter(&[server.to_string()]).await?;
            return Ok((addr, Role::Server, greeter));
        }
        if let Ok(candidates) = self.entry_servers().await {
            if let Ok((addr, greeter)) = self.connect_greeter(&candidates).await {
                return Ok((addr, Role::Server, greeter));
            }
        }
        let greeter = self.manager_greeter().await?;
        Ok((self.manager_addr().to_string(), Role::Manager, greeter))
    }
}

/// `dupla hello`: one reply per line (a JSON array with `--json`).
pub async fn command(client: &Client, names: &[String], out: Output) -> anyhow::Result<()> {
    let replies = client.hello(names).await?;
    out.emit(replies.join("\n"), &replies)
}
