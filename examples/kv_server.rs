//! A small key-value server on loopback, the way a server uses the crate:
//! its accept loop is a task of the group it feeds (through a
//! [`Spawner`]), the group keeps no results ([`Discard`]), an admin
//! command kicks one client ([`Spawner::cancel_task`]), a background
//! worker expires keys in a group of its own, and ctrl-c shuts down in
//! order: connections first (with a grace, naming the handlers that had
//! to be dropped), then the worker.
//!
//! ```text
//! cargo run --example kv_server              # listens on 127.0.0.1:7878
//! cargo run --example kv_server -- 127.0.0.1:0
//! nc 127.0.0.1 7878
//! SET colour blue 5000     (expires after 5 s)
//! GET colour
//! CLIENTS
//! KICK 2
//! ```
//!
//! The protocol, one command a line: `PING`, `SET key value [ttl_ms]`,
//! `GET key`, `DEL key`, `CLIENTS`, `KICK n`, `QUIT`; and two that make a
//! bad client or a bad handler for the tests: `FLOOD` (the server writes
//! lines until the client stops reading) and `DEAF` (the handler answers
//! `DEAF`, then ignores its context). `cargo test --example kv_server`
//! drives it with real TCP clients.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskgroup::{Context, Discard, Spawner, Tally, TaskGroup, TaskId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The most connections served at once; more wait in the group's queue.
const MAX_CONNECTIONS: usize = 250;

/// What the server shares between its tasks.
#[derive(Default)]
struct Shared {
    store: Mutex<HashMap<String, (String, Option<Instant>)>>,
    /// Client number → its task (once spawned) and address.
    clients: Mutex<BTreeMap<u64, (Option<TaskId>, SocketAddr)>>,
    next_client: AtomicU64,
}

type Connections = Spawner<(), io::Error, Discard>;

/// What a shutdown found.
#[derive(Debug)]
struct Report {
    /// How the connections ended (the accept loop among them).
    connections: Tally,
    /// The clients whose handlers had to be dropped when the grace ran out.
    stragglers: Vec<String>,
}

/// Serves `listener` until `stop` resolves, then shuts down: connections
/// get `grace` to finish, then the worker stops.
async fn serve(listener: TcpListener, stop: impl Future<Output = ()>, grace: Duration) -> Report {
    let shared = Arc::new(Shared::default());
    // A connection's error or panic is that connection's business: the
    // server goes on. So `Discard`, never `FailFast`.
    let mut conns = TaskGroup::<(), io::Error>::builder()
        .joiner(Discard)
        .limit(MAX_CONNECTIONS + 1) // and the accept loop
        .grace(grace)
        .name("connections")
        .build();
    // The worker in a group of its own: it must not take a connection's
    // slot, and it stops after the connections.
    let mut workers = TaskGroup::<(), io::Error>::builder()
        .name("workers")
        .build();
    let store = shared.clone();
    workers
        .build_task()
        .name("expiry")
        .spawn(move |ctx| expire(ctx, store));

    let spawner = conns.spawner();
    let state = shared.clone();
    conns
        .build_task()
        .name("accept")
        .spawn(move |ctx| accept(ctx, listener, spawner, state));

    stop.await;
    let report = conns.shutdown(grace).await;
    let stragglers = {
        let clients = shared.clients.lock().unwrap();
        report
            .stragglers()
            .iter()
            .map(|task| {
                let client = clients
                    .iter()
                    .find(|(_, (id, _))| *id == Some(task.id()))
                    .map(|(n, (_, addr))| format!("client {n} ({addr})"));
                let who = client.unwrap_or_else(|| task.to_string());
                eprintln!("dropped after the grace: {who}");
                who
            })
            .collect()
    };
    // The connections are gone: the worker may stop now.
    let _ = workers.shutdown(grace).await;
    Report {
        connections: report.output,
        stragglers,
    }
}

/// The accept loop: a task of the group it feeds.
async fn accept(
    ctx: Context,
    listener: TcpListener,
    conns: Connections,
    shared: Arc<Shared>,
) -> io::Result<()> {
    loop {
        let Ok(accepted) = ctx.run(listener.accept()).await else {
            return Ok(()); // shutting down
        };
        let (socket, addr) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors, say: try again shortly.
            Err(_) => {
                let _ = ctx.sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let n = shared.next_client.fetch_add(1, SeqCst) + 1;
        shared.clients.lock().unwrap().insert(n, (None, addr));
        let (handler_conns, handler_shared) = (conns.clone(), shared.clone());
        let spawned = conns.spawn(move |ctx| async move {
            let served = handle(&ctx, socket, n, &handler_conns, &handler_shared).await;
            handler_shared.clients.lock().unwrap().remove(&n);
            served
        });
        match spawned {
            Ok(id) => {
                if let Some((slot, _)) = shared.clients.lock().unwrap().get_mut(&n) {
                    *slot = Some(id);
                }
            }
            Err(_) => return Ok(()), // the group has ended
        }
    }
}

/// One client: a line in, a line out, until it quits, the server shuts
/// down, or an admin kicks it.
async fn handle(
    ctx: &Context,
    socket: TcpStream,
    n: u64,
    conns: &Connections,
    shared: &Shared,
) -> io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(format!("HELLO {n}\n").as_bytes()).await?;
    loop {
        let line = match ctx.run(lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Ok(()), // the client closed
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // Kicked, or the server is shutting down: say so, briefly.
                let why = ctx.cause().map(|c| c.to_string()).unwrap_or_default();
                let bye = format!("BYE {why}\n");
                let _ = ctx
                    .shield(Duration::from_millis(100), |_| async move {
                        write.write_all(bye.as_bytes()).await
                    })
                    .await;
                return Ok(());
            }
        };
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("PING"), None, ..) => "PONG".to_string(),
            (Some("SET"), Some(key), Some(value), ttl) => match ttl.map(str::parse::<u64>) {
                Some(Err(_)) => "ERR ttl_ms must be a whole number".to_string(),
                ttl => {
                    let expires = ttl.map(|ms| Instant::now() + Duration::from_millis(ms.unwrap()));
                    let mut store = shared.store.lock().unwrap();
                    store.insert(key.to_string(), (value.to_string(), expires));
                    "OK".to_string()
                }
            },
            (Some("GET"), Some(key), None, _) => match shared.store.lock().unwrap().get(key) {
                Some((value, expires)) if expires.is_none_or(|at| at > Instant::now()) => {
                    format!("VALUE {value}")
                }
                _ => "NIL".to_string(),
            },
            (Some("DEL"), Some(key), None, _) => {
                let removed = shared.store.lock().unwrap().remove(key).is_some();
                if removed { "OK" } else { "NIL" }.to_string()
            }
            (Some("CLIENTS"), None, ..) => {
                let clients = shared.clients.lock().unwrap();
                let list: Vec<String> = clients
                    .iter()
                    .map(|(n, (_, addr))| format!("{n}@{addr}"))
                    .collect();
                format!("CLIENTS {}", list.join(" "))
            }
            (Some("KICK"), Some(who), None, _) => kick(who, conns, shared),
            (Some("QUIT"), None, ..) => return Ok(()),
            (Some("FLOOD"), None, ..) => return flood(ctx, &mut write).await,
            (Some("DEAF"), None, ..) => {
                // Said before going deaf, so a test knows the handler has.
                write.write_all(b"DEAF\n").await?;
                deaf().await
            }
            _ => format!("ERR unknown command: {line}"),
        };
        // A client that stops reading must not hold the handler past a
        // shutdown: every reply is written under the context too.
        match ctx
            .run(write.write_all(format!("{reply}\n").as_bytes()))
            .await
        {
            Ok(written) => written?,
            Err(_) => return Ok(()),
        }
    }
}

fn kick(who: &str, conns: &Connections, shared: &Shared) -> String {
    let Ok(n) = who.parse::<u64>() else {
        return format!("ERR not a client number: {who}");
    };
    let task = shared
        .clients
        .lock()
        .unwrap()
        .get(&n)
        .and_then(|(id, _)| *id);
    match task {
        Some(id) if conns.cancel_task(id) => format!("KICKED {n}"),
        _ => format!("ERR no client {n}"),
    }
}

/// Writes lines until the client stops reading and the socket's buffers
/// fill; the writes wait under the context, so a shutdown ends them.
async fn flood(ctx: &Context, write: &mut tokio::net::tcp::OwnedWriteHalf) -> io::Result<()> {
    let line = [b'x'; 1023].into_iter().chain([b'\n']).collect::<Vec<u8>>();
    loop {
        match ctx.run(write.write_all(&line)).await {
            Ok(written) => written?,
            Err(_) => return Ok(()),
        }
    }
}

/// A handler with a bug: it ignores its context from now on. Only the
/// group's grace ends it (it is dropped at its next await).
async fn deaf() -> ! {
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The background worker: purges expired keys every 50 ms.
async fn expire(ctx: Context, shared: Arc<Shared>) -> io::Result<()> {
    while ctx.sleep(Duration::from_millis(50)).await.is_ok() {
        let now = Instant::now();
        let mut store = shared.store.lock().unwrap();
        store.retain(|_, (_, expires)| expires.is_none_or(|at| at > now));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".to_string());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
    };
    let report = serve(listener, stop, Duration::from_secs(2)).await;
    let tally = &report.connections;
    println!(
        "served: {} ok, {} failed, {} panicked, {} cancelled; dropped after the grace: {:?}",
        tally.ok(),
        tally.failed(),
        tally.panicked(),
        tally.cancelled(),
        report.stragglers
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::sync::oneshot;

    /// A server on a free loopback port, and the trigger that stops it.
    async fn start(
        grace: Duration,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<Report>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            async move {
                let _ = stopped.await;
            },
            grace,
        ));
        (addr, stop, server)
    }

    struct Client {
        lines: Lines<BufReader<OwnedReadHalf>>,
        write: OwnedWriteHalf,
        n: u64,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Client {
            let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
            let mut lines = BufReader::new(read).lines();
            let hello = lines.next_line().await.unwrap().unwrap();
            let n = hello.strip_prefix("HELLO ").unwrap().parse().unwrap();
            Client { lines, write, n }
        }

        async fn ask(&mut self, line: &str) -> String {
            self.write
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            self.lines.next_line().await.unwrap().unwrap()
        }
    }

    /// Bounds a step: a hang fails the test instead of stalling it.
    async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_hundred_clients_at_once_are_each_served() {
        let (addr, stop, server) = start(Duration::from_secs(1)).await;
        // Connected one after the other (a burst of 200 SYNs overflows some
        // sandboxes' loopback backlog, and the kernel retries after 1 s),
        // then all 200 open connections are served at once.
        let mut connected = Vec::new();
        for _ in 0..200 {
            connected.push(within("a connect", Client::connect(addr)).await);
        }
        let mut clients = TaskGroup::<(), String>::new();
        for (i, mut client) in connected.into_iter().enumerate() {
            clients.spawn(move |_ctx| async move {
                assert_eq!(client.ask(&format!("SET k{i} v{i}")).await, "OK");
                assert_eq!(
                    client.ask(&format!("GET k{i}")).await,
                    format!("VALUE v{i}")
                );
                assert_eq!(client.ask("PING").await, "PONG");
                Ok(())
            });
        }
        within("200 clients", clients.wait()).await.unwrap();
        stop.send(()).unwrap();
        let report = within("the shutdown", server).await.unwrap();
        assert!(report.stragglers.is_empty(), "{:?}", report.stragglers);
        assert_eq!(report.connections.failed(), 0);
        assert_eq!(report.connections.panicked(), 0);
        assert!(
            report.connections.ok() >= 201,
            "200 clients and the accept loop"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_holds_nothing_up() {
        let (addr, stop, server) = start(Duration::from_secs(5)).await;
        let mut flooded = Client::connect(addr).await;
        flooded.write.write_all(b"FLOOD\n").await.unwrap();
        // It never reads again; others are served meanwhile.
        let mut other = Client::connect(addr).await;
        assert_eq!(other.ask("SET a 1").await, "OK");
        assert_eq!(other.ask("GET a").await, "VALUE 1");
        stop.send(()).unwrap();
        let started = Instant::now();
        let report = within("the shutdown", server).await.unwrap();
        // The flood's writes wait under its context: the shutdown's cancel
        // ends them, long before the 5 s grace.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(report.stragglers.is_empty(), "{:?}", report.stragglers);
        drop(flooded);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_admin_kicks_one_client_and_the_others_stay() {
        let (addr, stop, server) = start(Duration::from_secs(1)).await;
        let mut admin = Client::connect(addr).await;
        let mut victim = Client::connect(addr).await;
        let mut bystander = Client::connect(addr).await;
        assert!(
            admin
                .ask("CLIENTS")
                .await
                .contains(&format!("{}@", victim.n))
        );
        assert_eq!(
            admin.ask(&format!("KICK {}", victim.n)).await,
            format!("KICKED {}", victim.n)
        );
        let bye = within("the kicked client's goodbye", victim.lines.next_line())
            .await
            .unwrap();
        assert!(bye.unwrap().contains("cancel_task"), "the cause says why");
        assert_eq!(within("EOF", victim.lines.next_line()).await.unwrap(), None);
        assert_eq!(bystander.ask("PING").await, "PONG");
        assert_eq!(
            admin.ask(&format!("KICK {}", victim.n)).await,
            format!("ERR no client {}", victim.n)
        );
        assert_eq!(
            admin.ask("KICK nobody").await,
            "ERR not a client number: nobody"
        );
        stop.send(()).unwrap();
        let report = within("the shutdown", server).await.unwrap();
        assert!(report.stragglers.is_empty());
        assert_eq!(report.connections.failed(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_names_the_deaf_handler_it_had_to_drop() {
        let grace = Duration::from_millis(300);
        let (addr, stop, server) = start(grace).await;
        let mut deaf = Client::connect(addr).await;
        // Its answer comes once the handler ignores its context.
        assert_eq!(deaf.ask("DEAF").await, "DEAF");
        let mut polite = Client::connect(addr).await;
        assert_eq!(polite.ask("PING").await, "PONG");
        stop.send(()).unwrap();
        let bye = within("the polite client's goodbye", polite.lines.next_line())
            .await
            .unwrap();
        assert!(bye.unwrap().starts_with("BYE"));
        let started = Instant::now();
        let report = within("the shutdown", server).await.unwrap();
        assert!(started.elapsed() <= grace + Duration::from_secs(2));
        assert_eq!(report.stragglers.len(), 1, "{:?}", report.stragglers);
        assert!(report.stragglers[0].starts_with(&format!("client {} (127.0.0.1:", deaf.n)));
        assert!(report.connections.cancelled() >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_input_gets_an_error_naming_it_and_keys_expire() {
        let (addr, stop, server) = start(Duration::from_secs(1)).await;
        let mut client = Client::connect(addr).await;
        assert_eq!(client.ask("FROB").await, "ERR unknown command: FROB");
        assert_eq!(
            client.ask("SET k v soon").await,
            "ERR ttl_ms must be a whole number"
        );
        assert_eq!(client.ask("SET k v 60000").await, "OK");
        assert_eq!(client.ask("GET k").await, "VALUE v");
        assert_eq!(client.ask("SET gone v 0").await, "OK"); // expired at once
        assert_eq!(client.ask("GET gone").await, "NIL");
        assert_eq!(client.ask("DEL k").await, "OK");
        assert_eq!(client.ask("DEL k").await, "NIL");
        stop.send(()).unwrap();
        within("the shutdown", server).await.unwrap();
    }
}
