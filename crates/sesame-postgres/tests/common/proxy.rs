//! A TCP proxy in front of PostgreSQL that the tests can stop and start again (an outage that
//! needs no control of the server), and that counts round trips: each time the client speaks after
//! the server has, that is one more. Round trips that are only a `Sync` message are counted apart:
//! they are the connection test sqlx's pool runs when a connection is released, after the caller
//! already has its answer.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    turns: Arc<Counts>,
    /// The accept task and every connection task, aborted (closing their sockets) by `stop`.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// A running proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            target,
            turns: Arc::default(),
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    /// A proxy to the server of `DATABASE_URL`.
    pub async fn to_database() -> Self {
        let url = super::database_url();
        let (_, host_port) = authority(&url);
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        let target = tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap();
        Self::start(target).await
    }

    /// `DATABASE_URL`, through the proxy, without TLS (so that the messages can be told apart
    /// when the crate is built with TLS and the server offers it).
    pub fn url(&self) -> String {
        let url = super::database_url();
        let (start, host_port) = authority(&url);
        let end = start + host_port.len();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "{}{}{}{separator}sslmode=disable",
            &url[..start],
            self.addr,
            &url[end..]
        )
    }

    /// Round trips that carried statements since the last reset.
    pub fn round_trips(&self) -> usize {
        self.turns.statements.load(Ordering::SeqCst)
    }

    /// Round trips that were only a connection test (`Sync`) since the last reset.
    pub fn pings(&self) -> usize {
        self.turns.pings.load(Ordering::SeqCst)
    }

    pub fn reset_round_trips(&self) {
        self.turns.statements.store(0, Ordering::SeqCst);
        self.turns.pings.store(0, Ordering::SeqCst);
    }

    /// Closes the port and every proxied connection: the server looks down.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        // The aborted accept task may take a moment to drop its listener.
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("could not listen on {} again", self.addr);
    }

    fn serve(&self, listener: TcpListener) {
        let (target, turns, tasks) = (self.target, self.turns.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let pipe = tokio::spawn(pipe(client, server, turns.clone()));
                tasks.lock().unwrap().push(pipe.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }
}

/// Where the `host:port` of `url` starts, and it (with the default port added when missing,
/// which only the returned text has).
fn authority(url: &str) -> (usize, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    (after_scheme + host_start, &authority[host_start..])
}

#[derive(Default)]
struct Counts {
    statements: AtomicUsize,
    pings: AtomicUsize,
}

/// A `Sync` message alone: what `ping` sends.
const SYNC: &[u8] = b"S\0\0\0\x04";

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, turns: Arc<Counts>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_spoke_last = AtomicBool::new(false);
    let up = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            if !client_spoke_last.swap(true, Ordering::SeqCst) {
                let counter = if &buf[..n] == SYNC {
                    &turns.pings
                } else {
                    &turns.statements
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            // Before forwarding: the client cannot answer what it has not received.
            client_spoke_last.store(false, Ordering::SeqCst);
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
