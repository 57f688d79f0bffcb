//! With the `tracing` feature, every restart of a supervisor's child is an
//! event naming the supervisor, the child, the attempt and the cause. A
//! binary of its own with a global subscriber: a scoped one
//! (`with_default`) races tracing's callsite interest with tests running
//! beside it on other threads, and may see nothing.
#![cfg(feature = "tracing")]

mod support;

use std::time::Duration;

use support::Captured;
use taskgroup::Supervisor;

#[test]
fn every_restart_is_a_tracing_event() {
    let captured = Captured::global();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sup = Supervisor::<String>::builder().name("traced").build();
        sup.child("flaky").spawn(|ctx, run| async move {
            if run.attempt() < 2 {
                return Err("flaky failed".to_string());
            }
            ctx.done().await;
            Ok(())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        sup.shutdown().await.unwrap();
    });
    let text = captured.text();
    let restarts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("restarting child"))
        .collect();
    assert_eq!(restarts.len(), 2, "{text}");
    for (attempt, line) in restarts.iter().enumerate() {
        assert!(line.contains("supervisor=\"traced\""), "{line}");
        assert!(line.contains("child=\"flaky\""), "{line}");
        assert!(line.contains(&format!("attempt={}", attempt + 1)), "{line}");
        assert!(line.contains("cause=error: flaky failed"), "{line}");
    }
}
