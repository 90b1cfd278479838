//! A TCP proxy in front of a real server that fails the way networks do: it drops the first
//! connections before any answer, and cuts the first large response short, or flips one of
//! its bytes, once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Flaky {
    pub endpoint: String,
    pub dropped: Arc<AtomicUsize>,
    pub cut: Arc<AtomicBool>,
}

/// What happens at byte `at` of the first response that long.
#[derive(Clone, Copy)]
pub enum Fault {
    Cut,
    Flip,
}

/// Proxies to `upstream` (host:port): the first `drop_first` connections are closed once
/// their request arrives; the first response longer than `at` bytes gets `fault` there.
pub fn start(upstream: &str, drop_first: usize, at: usize, fault: Fault) -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
    let dropped = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let (d, c, up) = (dropped.clone(), cut.clone(), upstream.to_string());
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut client) = conn else { continue };
            if n < drop_first {
                let mut buf = [0u8; 1024];
                let _ = client.read(&mut buf);
                let _ = client.shutdown(Shutdown::Both);
                d.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let Ok(server) = TcpStream::connect(&up) else {
                continue;
            };
            let (mut c_in, mut s_out) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let cut = c.clone();
            std::thread::spawn(move || {
                let (mut server, mut client) = (server, client);
                let mut buf = vec![0u8; 64 * 1024];
                let mut sent = 0usize;
                while let Ok(n) = server.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if sent + n > at && !cut.swap(true, Ordering::SeqCst) {
                        let i = at.saturating_sub(sent);
                        if let Fault::Cut = fault {
                            let _ = client.write_all(&buf[..i]);
                            let _ = client.shutdown(Shutdown::Both);
                            let _ = server.shutdown(Shutdown::Both);
                            return;
                        }
                        buf[i] ^= 0x55;
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(Shutdown::Write);
            });
        }
    });
    Flaky {
        endpoint,
        dropped,
        cut,
    }
}
