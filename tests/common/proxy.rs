//! A TCP proxy that can be frozen: while frozen it accepts and holds connections but passes
//! no bytes, so requests through it hang as they do behind a dead link or a stalled API
//! server, while clients that bypass it keep working. (A real API server cannot make one
//! client's requests hang on demand; this puts the fault in the network instead.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FreezableProxy {
    pub port: u16,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    pub async fn start(upstream: String) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, f.clone()), pump(sr, cw, f));
                });
            }
        });
        FreezableProxy { port, frozen, task }
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a freeze are held until it ends.
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy that passes what clients send upstream at no more than `bytes_per_second`
/// (replies pass at full speed): a destination slowed on purpose, as one behind a thin link
/// or a busy disk is, steadily enough that a copy's ETA can be checked against its finish.
pub struct ThrottledProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottledProxy {
    pub async fn start(upstream: String, bytes_per_second: u64) -> ThrottledProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // One budget for every connection: the link is slow, not each connection.
        let bucket = Arc::new(tokio::sync::Mutex::new(Bucket {
            rate: bytes_per_second as f64,
            tokens: 0.0,
            at: tokio::time::Instant::now(),
        }));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let bucket = bucket.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let never = Arc::new(AtomicBool::new(false));
                    tokio::join!(throttled(cr, sw, bucket), pump(sr, cw, never));
                });
            }
        });
        ThrottledProxy { port, task }
    }
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Bucket {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

async fn throttled(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bucket: Arc<tokio::sync::Mutex<Bucket>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes are sent once the shared budget covers them; at most a second's worth of
        // budget is saved up, so an idle spell buys no burst beyond that.
        let wait = {
            let mut b = bucket.lock().await;
            let now = tokio::time::Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * b.rate).min(b.rate);
            b.at = now;
            b.tokens -= n as f64;
            (b.tokens < 0.0).then(|| Duration::from_secs_f64(-b.tokens / b.rate))
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
