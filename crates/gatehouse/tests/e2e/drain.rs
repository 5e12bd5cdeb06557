//! Graceful drain of the real binary: SIGTERM under load, and every request the gateway took
//! gets its whole response before the process exits 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{config_head, wait_for, Instance, Replica};

/// What one request on its own connection came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// The connection was refused: the gateway no longer listened.
    Refused,
    /// A whole response with this status.
    Answered(u16),
    /// The connection was accepted and closed without a byte of answer.
    Dropped(String),
    /// An answer that stopped short.
    Cut(String),
}

async fn one_request(address: &str) -> Fate {
    let mut socket = match TcpStream::connect(address).await {
        Ok(socket) => socket,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Fate::Refused
        }
        Err(error) => return Fate::Dropped(format!("connect: {error}")),
    };
    let request = "GET /api/pool/work HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n";
    if let Err(error) = socket.write_all(request.as_bytes()).await {
        return Fate::Dropped(format!("write: {error}"));
    }
    let mut answer = Vec::new();
    if let Err(error) = socket.read_to_end(&mut answer).await {
        if answer.is_empty() {
            return Fate::Dropped(format!("read: {error}"));
        }
        return Fate::Cut(format!("read after {} bytes: {error}", answer.len()));
    }
    if answer.is_empty() {
        return Fate::Dropped("closed without an answer".to_owned());
    }
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Fate::Cut(format!("no end of headers: {text:?}"));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(length) if length == body.len() => Fate::Answered(status),
        _ => Fate::Cut(format!("body of {} bytes, head {head:?}", body.len())),
    }
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request_and_exits_0() {
    let upstream = Instance::start("a").await;
    // Slow answers, so that requests are in flight when the signal comes.
    upstream.set_delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    let text = format!(
        "{head}  pool: {{ upstreams: [\"{a}\"] }}\n\
         routes:\n  - {{ path: \"/api/pool/{{*rest}}\", methods: [GET], service: pool, to: \"/{{rest}}\", auth: public }}\n",
        head = config_head("off"),
        a = upstream.url(),
    )
    .replace("${DATA}", &dir.path().join("data").display().to_string());
    std::fs::write(&config, text).unwrap();
    // At `info`, so that a failure shows what the gateway said while draining.
    let gateway = Replica::start(&config, &[("RUST_LOG", "info")]).await;
    let address = gateway.url.trim_start_matches("http://").to_owned();
    wait_for("the gateway process", || async {
        matches!(one_request(&address).await, Fate::Answered(200)).then_some(())
    })
    .await;
    let answered_before = upstream.hits();

    // Clients that each send one request per connection until the gateway stops listening.
    let fates = Arc::new(Mutex::new(Vec::new()));
    let signalled = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (address, fates, signalled) =
                (address.clone(), Arc::clone(&fates), Arc::clone(&signalled));
            tokio::spawn(async move {
                loop {
                    let after_signal = signalled.load(Ordering::SeqCst);
                    let fate = one_request(&address).await;
                    let refused = fate == Fate::Refused;
                    fates.lock().unwrap().push((after_signal, fate));
                    if refused {
                        break;
                    }
                }
            })
        })
        .collect();

    let in_flight = wait_for("requests in flight", || async {
        let n = upstream.in_flight();
        (n >= 8).then_some(n)
    })
    .await;
    gateway.process.signal("TERM");
    signalled.store(true, Ordering::SeqCst);

    let exit = gateway.process.exit().await;
    for client in clients {
        tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("every client ends once the gateway is gone")
            .unwrap();
    }
    let log = gateway.process.log();
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}; log:\n{log}");

    let fates = fates.lock().unwrap().clone();
    let answered = fates
        .iter()
        .filter(|(_, fate)| *fate == Fate::Answered(200))
        .count();
    let lost: Vec<_> = fates
        .iter()
        .filter(|(_, fate)| !matches!(fate, Fate::Answered(200) | Fate::Refused))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} requests lost ({} in flight at SIGTERM): {lost:?}\nlog:\n{log}",
        lost.len(),
        fates.len(),
        in_flight
    );
    assert_eq!(
        answered,
        upstream.hits() - answered_before,
        "every request that reached the service was answered"
    );
    assert!(
        answered >= in_flight,
        "the requests in flight at SIGTERM were answered: {answered} < {in_flight}"
    );
    eprintln!(
        "SIGTERM under load: {answered} answered ({in_flight} in flight at the signal), {} refused after it, 0 lost",
        fates.iter().filter(|(_, fate)| *fate == Fate::Refused).count()
    );
}
