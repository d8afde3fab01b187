//! `dupla.v1.Greeter`: the socket-basics exercise on every node. A stream of
//! names in, `Hola <name>` out for each, in order.

use crate::v1::{greeter_server::Greeter, HelloReply, HelloRequest};
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Longest name greeted, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// The Greeter service; stateless.
#[derive(Default, Clone, Copy, Debug)]
pub struct GreeterService;

/// Greeting for one name.
pub fn greeting(name: &str) -> String {
    format!("Hola {name}")
}

#[tonic::async_trait]
impl Greeter for GreeterService {
    type HelloStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

    async fn hello(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<Self::HelloStream>, Status> {
        let names = request.into_inner();
        let replies = names.map(|item| {
            let name = item?.name;
            if name.len() > MAX_NAME_BYTES {
                return Err(Status::invalid_argument(format!(
                    "names are at most {MAX_NAME_BYTES} bytes"
                )));
            }
            Ok(HelloReply {
                message: greeting(&name),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}
