//! A gRPC handler behind `ContextLayer` (feature `tonic`) against the same
//! handler without it: one unary call at a time on one loopback HTTP/2
//! connection, tonic client and server, per call. The handler reads its
//! context (`request_context`) when the layer is there, and nothing else.
//!
//! `cargo bench --bench grpc`

#[path = "../examples/grpc_chain/chain.rs"]
mod chain;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::{Handler, Hop, Reply, Work, hop_call};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use taskgroup::Context;
use taskgroup::http::ContextLayer;
use taskgroup::http::tonic::request_context;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic::{Request, Response, Status};

struct Echo {
    layered: bool,
}

impl Handler for Echo {
    fn handle(
        &self,
        req: Request<Work>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Reply>, Status>> + Send + '_>> {
        Box::pin(async move {
            if self.layered {
                let ctx = request_context(&req)?;
                ctx.check()?;
            }
            Ok(Response::new(Reply {
                note: req.into_inner().scenario,
            }))
        })
    }
}

async fn server(layered: bool, root: &Context) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = Hop(Arc::new(Echo { layered }));
    let stop = root.done_owned();
    if layered {
        let server = Server::builder()
            .layer(ContextLayer::new(root))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop);
        tokio::spawn(server);
    } else {
        let server = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop);
        tokio::spawn(server);
    }
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

fn grpc(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (root, stop) = Context::background().with_cancel();
    let mut group = c.benchmark_group("grpc_call");
    let calls = 200u64;
    group.throughput(Throughput::Elements(calls));
    for (name, layered) in [("with_context_layer", true), ("without", false)] {
        let channel = rt.block_on(server(layered, &root));
        group.bench_function(BenchmarkId::new(name, calls), |b| {
            b.iter_custom(|iters| {
                let channel = channel.clone();
                rt.block_on(async move {
                    let t0 = Instant::now();
                    for _ in 0..iters * calls {
                        let req = Request::new(Work {
                            scenario: "echo".into(),
                            work_ms: 0,
                            branch: 0,
                        });
                        hop_call(channel.clone(), req).await.unwrap();
                    }
                    t0.elapsed()
                })
            })
        });
    }
    group.finish();
    stop.cancel();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = grpc
}
criterion_main!(benches);
