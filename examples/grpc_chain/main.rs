//! A request's deadline and cancellation at every hop of a real gRPC chain
//! (tonic): three services on loopback, A → B → C, where A fans out to two
//! B calls through a `TaskGroup` and B calls C (`chain.rs`).
//!
//! ```text
//! cargo run --example grpc_chain -- --check
//! ```
//!
//! `--check` runs the scenarios and exits non-zero if one fails: (1) a
//! 300 ms client deadline reaches C as a smaller budget, C stops at it,
//! the client gets `DEADLINE_EXCEEDED`; (2) the client drops its call
//! once C works, 20 times: C's context is cancelled within 20 ms (the
//! median is reported) and no call is left in flight at any hop; (3) one B
//! call fails: A's group cancels the other, whose C work stops; (4) a
//! client that is not ours, Python's `grpcio`, with `timeout=` and with
//! `call.cancel()`: both reach C. (4) runs when `TASKGROUP_GRPC_PYTHON`
//! names a Python with `grpcio` (`scripts/grpc-check.sh` makes one in a
//! virtual environment), and is reported `foreign_client=no` otherwise.
//! Without `--check` it starts the chain and prints A's address.

mod chain;

use std::process::ExitCode;
use std::time::Duration;

use chain::{Chain, Findings};

const BUDGET: Duration = Duration::from_millis(300);
const TRIES: usize = 20;

async fn check() -> Result<Findings, String> {
    let chain = Chain::start().await;
    let mut findings = Findings {
        budget_ms: BUDGET.as_millis() as u64,
        ..Findings::default()
    };

    let (code, last) = chain::deadline(&chain, BUDGET).await?;
    findings.deadline_status = format!("{code:?}");
    findings.last_hop_budget_ms = last.as_millis() as u64;
    if code != tonic::Code::DeadlineExceeded {
        return Err(format!("the client got {code:?}, not DEADLINE_EXCEEDED"));
    }
    println!(
        "(1) deadline: C saw a budget of {last:?} of the client's {BUDGET:?}; client got {code:?}"
    );

    let mut latencies = Vec::new();
    for try_no in 0..TRIES {
        latencies.push(chain::cancel_once(&chain, try_no).await?);
    }
    findings.cancel_to_last_hop_ms = chain::median_ms(latencies.clone());
    println!(
        "(2) cancel: C's context cancelled {:.2} ms (median of {TRIES}) after the client dropped its call; max {:?}",
        findings.cancel_to_last_hop_ms,
        latencies.iter().max().unwrap()
    );
    if findings.cancel_to_last_hop_ms > 20.0 {
        return Err(format!(
            "C heard of the cancel {:.1} ms after it, more than 20 ms",
            findings.cancel_to_last_hop_ms
        ));
    }

    findings.sibling_cancelled = chain::sibling(&chain).await?;
    println!(
        "(3) sibling: the other branch's C work stopped: {}",
        findings.sibling_cancelled
    );
    if !findings.sibling_cancelled {
        return Err("the failing branch did not cancel its sibling".into());
    }
    chain.stop().await;
    Ok(findings)
}

/// Scenario 4, with Python's grpcio against a fresh chain. `Ok(false)`
/// when no such Python is configured.
async fn foreign() -> Result<bool, String> {
    let Ok(python) = std::env::var("TASKGROUP_GRPC_PYTHON") else {
        return Ok(false);
    };
    let chain = Chain::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grpc_chain/client.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(chain.a.to_string())
        .output()
        .await
        .map_err(|e| format!("running {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        return Err(format!(
            "the Python client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // Its deadline call and its cancelled call both reached C, and C's
    // context ended for each (C's watcher records it on a task of its own).
    if !chain.quiet().await {
        return Err("calls still in flight after the Python client".into());
    }
    for _ in 0..2_000 {
        let all = chain
            .seen("deadline")
            .into_iter()
            .chain(chain.seen("cancel"));
        if all.clone().count() == 4 && all.into_iter().all(|s| s.cancelled.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let deadline = chain.seen("deadline");
    let cancel = chain.seen("cancel");
    // grpcio keeps its deadline in whole milliseconds, rounded up, and
    // writes what is left of it as a whole number of milliseconds (gRPC
    // core's `Timeout::FromMillis`): A may be told up to 2 ms more than the
    // client's 0.3 s (CI saw C start with 300.57 ms). Past that bound, the
    // client's deadline did not cross the chain.
    let bound = BUDGET + Duration::from_millis(2);
    let ok = deadline.len() == 2
        && deadline
            .iter()
            .all(|s| s.budget.is_some_and(|b| b < bound) && s.cancelled.is_some())
        && cancel.len() == 2
        && cancel.iter().all(|s| s.cancelled.is_some());
    chain.stop().await;
    if !ok {
        return Err(format!(
            "C did not see the Python client's deadline and cancel: {deadline:?} {cancel:?}"
        ));
    }
    println!("(4) foreign client: grpcio's timeout and cancel both reached C");
    Ok(true)
}

#[tokio::main]
async fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--check") {
        let chain = Chain::start().await;
        println!("A listens on {}; ctrl-c to stop", chain.a);
        let _ = tokio::signal::ctrl_c().await;
        chain.stop().await;
        return ExitCode::SUCCESS;
    }
    let findings = match check().await {
        Ok(findings) => findings,
        Err(why) => {
            eprintln!("grpc_chain: FAILED: {why}");
            return ExitCode::FAILURE;
        }
    };
    let foreign_client = match foreign().await {
        Ok(ran) => ran,
        Err(why) => {
            eprintln!("grpc_chain: FAILED: {why}");
            return ExitCode::FAILURE;
        }
    };
    let deadline_status = match findings.deadline_status.as_str() {
        "DeadlineExceeded" => "DEADLINE_EXCEEDED",
        other => other,
    };
    println!(
        "grpc_chain: hops=3 budget_ms={} last_hop_budget_ms={} deadline_status={} cancel_to_last_hop_ms={:.2} sibling_cancelled={} foreign_client={}",
        findings.budget_ms,
        findings.last_hop_budget_ms,
        deadline_status,
        findings.cancel_to_last_hop_ms,
        if findings.sibling_cancelled {
            "yes"
        } else {
            "no"
        },
        if foreign_client { "yes" } else { "no" },
    );
    ExitCode::SUCCESS
}
