//! The gRPC chain (feature `tonic`) on real tonic servers and clients on
//! loopback: each scenario of `examples/grpc_chain` as a test, and the
//! hostile `grpc-timeout` inputs a server must survive: 0, the 8-digit
//! maximum in each unit, malformed, duplicated, and none at all (the
//! server's `max_timeout` applies; 10 s in the chain).
#![cfg(not(loom))]

#[path = "../examples/grpc_chain/chain.rs"]
mod chain;

use std::time::Duration;

use chain::{Chain, Work, hop_call};
use tonic::Request;
use tonic::metadata::MetadataValue;

const MAX: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_reaches_the_last_hop_smaller_and_ends_it_there() {
    let chain = Chain::start().await;
    let budget = Duration::from_millis(300);
    let (code, last) = chain::deadline(&chain, budget).await.unwrap();
    assert_eq!(code, tonic::Code::DeadlineExceeded);
    assert!(last < budget && last > budget / 2, "C saw {last:?}");
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_cancels_the_last_hop_within_20_ms_and_leaves_nothing_running() {
    let chain = Chain::start().await;
    let mut latencies = Vec::new();
    for try_no in 0..20 {
        latencies.push(chain::cancel_once(&chain, try_no).await.unwrap());
    }
    let median = chain::median_ms(latencies);
    assert!(median <= 20.0, "median {median:.1} ms");
    let seen = chain.seen("cancel");
    assert!(seen.len() >= 20, "C saw every try: {}", seen.len());
    for seen in seen {
        let cause = seen.cause.unwrap_or_default();
        assert!(!cause.is_empty(), "C's context says why it ended");
    }
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_branch_cancels_its_sibling_down_to_the_last_hop() {
    let chain = Chain::start().await;
    assert!(chain::sibling(&chain).await.unwrap());
    chain.stop().await;
}

/// Calls C directly with these raw `grpc-timeout` values; returns the
/// client's status code and the budget C saw, if C ran.
async fn call_c_with(
    chain: &Chain,
    values: &[&'static str],
) -> (tonic::Code, Option<Option<Duration>>) {
    let scenario = format!("raw {values:?}");
    let mut req = Request::new(Work {
        scenario: scenario.clone(),
        work_ms: 0,
        branch: 0,
    });
    for value in values {
        req.metadata_mut()
            .append("grpc-timeout", MetadataValue::from_static(value));
    }
    let code = match hop_call(chain.last_hop(), req).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let seen = chain.seen(&scenario);
    (code, seen.first().map(|s| s.budget))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_gives_a_context_born_expired() {
    let chain = Chain::start().await;
    for zero in ["0n", "0S", "0H"] {
        let (code, budget) = call_c_with(&chain, &[zero]).await;
        // tonic's own timeout ("Timeout expired", CANCELLED) may answer
        // before the handler runs; if it ran, its context was expired.
        assert!(
            matches!(code, tonic::Code::Cancelled | tonic::Code::DeadlineExceeded),
            "{zero}: {code:?}"
        );
        if let Some(budget) = budget {
            assert_eq!(budget, Some(Duration::ZERO), "{zero}");
        }
    }
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_8_digit_maximum_in_each_unit_is_capped_by_the_servers_max_timeout() {
    let chain = Chain::start().await;
    let cases = [
        ("99999999H", MAX),
        ("99999999M", MAX),
        ("99999999S", MAX),
        ("99999999m", MAX),
        ("99999999u", Duration::from_micros(99_999_999).min(MAX)),
        ("99999999n", Duration::from_nanos(99_999_999)),
    ];
    for (value, expected) in cases {
        let (code, budget) = call_c_with(&chain, &[value]).await;
        assert_eq!(code, tonic::Code::Ok, "{value}");
        let budget = budget
            .flatten()
            .unwrap_or_else(|| panic!("{value}: C had no deadline"));
        assert!(
            budget <= expected && budget > expected.saturating_sub(Duration::from_millis(50)),
            "{value}: {budget:?}"
        );
    }
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_duplicated_timeout_is_refused_before_the_handler() {
    let chain = Chain::start().await;
    for values in [
        &["abc"][..],
        &["123456789S"],
        &["10x"],
        &["-1S"],
        &["1S", "2S"],
    ] {
        let (code, budget) = call_c_with(&chain, values).await;
        assert_ne!(code, tonic::Code::Ok, "{values:?}");
        assert!(budget.is_none(), "{values:?}: the handler ran");
    }
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_deadline_from_the_client_means_the_servers_max_timeout() {
    let chain = Chain::start().await;
    let (code, budget) = call_c_with(&chain, &[]).await;
    assert_eq!(code, tonic::Code::Ok);
    let budget = budget.flatten().expect("max_timeout gives a deadline");
    assert!(
        budget <= MAX && budget > MAX - Duration::from_millis(50),
        "{budget:?}"
    );
    chain.stop().await;
}

/// The cause says which: a call the client cancels alone (a stream reset)
/// ends A's context with `ResponseDropped`; a client whose connection
/// closes ends it with `PeerClosed` (or `PeerReset`), seen by A's watched
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cause_says_whether_the_call_or_the_connection_ended() {
    use taskgroup::http::Disconnected;
    let chain = Chain::start().await;
    // A call cancelled alone: the connection stays (`kept`), the stream is
    // reset.
    let kept = chain.client();
    let started = chain.probe.c_started.notified();
    let call = tokio::spawn(hop_call(
        kept.clone(),
        Request::new(Work {
            scenario: "stream".into(),
            work_ms: 10_000,
            branch: 0,
        }),
    ));
    started.await;
    call.abort();
    assert!(chain.quiet().await);
    // A proxy between the client and A, closed under a call in progress.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let a = chain.a;
    let piping = tokio::spawn(async move {
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(a).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{proxy_addr}"))
        .unwrap()
        .connect_lazy();
    let started = chain.probe.c_started.notified();
    let call = tokio::spawn(hop_call(
        channel,
        Request::new(Work {
            scenario: "connection".into(),
            work_ms: 10_000,
            branch: 0,
        }),
    ));
    started.await;
    piping.abort(); // both sockets dropped: A's connection sees its peer go
    assert!(chain.quiet().await, "A, B and C ended the call");
    let _ = call.await;
    let mut causes = Vec::new();
    for _ in 0..2_000 {
        causes = chain.probe.a_causes.lock().unwrap().clone();
        if causes.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        causes[0],
        Disconnected::ResponseDropped.to_string(),
        "{causes:?}"
    );
    assert!(
        causes[1] == Disconnected::PeerClosed.to_string()
            || causes[1] == Disconnected::PeerReset.to_string(),
        "{causes:?}"
    );
    chain.stop().await;
}
