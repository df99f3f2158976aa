//! The poller's kept connections ([`crate::node::Nodes::status_pooled`]): plain RESP2 on the
//! node's TCP stream, used by one call at a time (the call takes it out of the pool and puts
//! it back when it succeeded).
//!
//! Why not the `redis` crate's multiplexed connection here: every reply there goes through a
//! driver task and a channel (two task wake-ups and a channel message per command), which at
//! thousands of polls per second is most of a poll's cost. A kept connection only ever sends
//! `AUTH` and `INFO <section>` and expects a status, an error or a bulk string back, so the
//! exchange is a write and reads into one buffer kept with the connection.
//!
//! - What is read for one reply is capped by the caller's `limit` (a bulk string announcing
//!   more fails before anything of it is read).
//! - A connection with bytes nobody asked for (left after a reply) is not reused.
//! - Timeouts are the caller's (the node client bounds every call).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest status, error or length line accepted.
const MAX_LINE: usize = 64 * 1024;

/// A kept buffer larger than this after a call is given back (a rare large reply does not
/// keep its memory for the connection's life).
const KEEP_BUFFER: usize = 16 * 1024;

/// The first read room of a connection's buffer (an `INFO replication` is 0.3–2 KiB; the
/// buffer doubles when a reply needs more).
const FIRST_ROOM: usize = 4096;

/// One reply, borrowing the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    Status(&'a [u8]),
    Error(&'a [u8]),
    Bulk(&'a [u8]),
    Nil,
    Int(i64),
}

/// Why a call failed (the node client maps these to `NodeError`s).
#[derive(Debug)]
pub(crate) enum CallError {
    Io(std::io::Error),
    /// The node closed the connection.
    Closed,
    /// The reply exceeds the caller's limit.
    TooLarge,
    /// Not RESP2 as expected (or bytes nobody asked for).
    Protocol(String),
}

/// Where the reply found at the start of the buffer is, and how long it is.
enum Found {
    Status(usize, usize),
    Error(usize, usize),
    Bulk(usize, usize),
    Nil,
    Int(i64),
}

pub(crate) struct Kept {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` the last reply used (more in `buf`: unsolicited data).
    used: usize,
}

/// The RESP2 form of a command.
pub(crate) fn encode(words: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + words.iter().map(|w| w.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Kept {
    pub(crate) fn new(stream: TcpStream) -> Kept {
        Kept {
            stream,
            buf: Vec::new(),
            used: 0,
        }
    }

    /// Send `command` (already encoded, [`encode`]) and read its reply, reading at most
    /// `limit` bytes for it.
    pub(crate) async fn call(
        &mut self,
        command: &[u8],
        limit: usize,
    ) -> Result<Reply<'_>, CallError> {
        if self.used != self.buf.len() {
            return Err(CallError::Protocol(
                "the node sent data nobody asked for".into(),
            ));
        }
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.used = 0;
        self.stream
            .write_all(command)
            .await
            .map_err(CallError::Io)?;
        let found = loop {
            if let Some(f) = find(&self.buf, limit)? {
                break f;
            }
            if self.buf.len() >= limit {
                return Err(CallError::TooLarge);
            }
            if self.buf.capacity() - self.buf.len() < FIRST_ROOM / 4 {
                let more = self.buf.len().max(FIRST_ROOM);
                self.buf.reserve(more.min(limit - self.buf.len()));
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(CallError::Io)?;
            if n == 0 {
                return Err(CallError::Closed);
            }
            if self.buf.len() > limit {
                return Err(CallError::TooLarge);
            }
        };
        let (found, used) = found;
        self.used = used;
        Ok(match found {
            Found::Status(s, e) => Reply::Status(&self.buf[s..e]),
            Found::Error(s, e) => Reply::Error(&self.buf[s..e]),
            Found::Bulk(s, e) => Reply::Bulk(&self.buf[s..e]),
            Found::Nil => Reply::Nil,
            Found::Int(i) => Reply::Int(i),
        })
    }
}

/// The index of the first `\r\n` in `buf`.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The reply at the start of `buf` and the bytes it takes, if it is complete (`None`: read
/// more).
fn find(buf: &[u8], limit: usize) -> Result<Option<(Found, usize)>, CallError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(end) = line_end(buf) else {
        if buf.len() > MAX_LINE {
            return Err(CallError::Protocol("reply line too long".into()));
        }
        return Ok(None);
    };
    // A reply that starts with its line end has no kind byte (and `buf[1..0]` would panic).
    if end == 0 {
        return Err(CallError::Protocol("empty reply line".into()));
    }
    let line = &buf[1..end];
    let number = || -> Result<i64, CallError> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or_else(|| CallError::Protocol("bad number in reply".into()))
    };
    Ok(Some(match kind {
        b'+' => (Found::Status(1, end), end + 2),
        b'-' => (Found::Error(1, end), end + 2),
        b':' => (Found::Int(number()?), end + 2),
        b'$' => {
            let len = number()?;
            if len == -1 {
                return Ok(Some((Found::Nil, end + 2)));
            }
            let len = usize::try_from(len)
                .map_err(|_| CallError::Protocol("bad bulk length in reply".into()))?;
            let start = end + 2;
            if len > limit.saturating_sub(start) {
                return Err(CallError::TooLarge);
            }
            if buf.len() < start + len + 2 {
                return Ok(None);
            }
            if &buf[start + len..start + len + 2] != b"\r\n" {
                return Err(CallError::Protocol("bulk reply not terminated".into()));
            }
            (Found::Bulk(start, start + len), start + len + 2)
        }
        b'*' => return Err(CallError::Protocol("unexpected array reply".into())),
        _ => return Err(CallError::Protocol("not a RESP2 reply".into())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(buf: &[u8]) -> Result<Option<Found>, CallError> {
        find(buf, 1024).map(|f| f.map(|(f, _)| f))
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"INFO", b"replication"]),
            b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n".to_vec()
        );
    }

    /// Property test over 200 000 generated inputs (valid replies of every kind, cut at every
    /// length, then mutated): `find` never panics, what it reports lies inside the buffer, a
    /// valid reply is "read more" at every strict prefix and found whole at its full length.
    #[test]
    fn find_holds_its_invariants_on_generated_and_mutated_replies() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let limit = 4096;
        for i in 0..200_000u64 {
            let n = next();
            let payload: Vec<u8> = (0..(n % 300)).map(|_| (next() % 256) as u8).collect();
            let mut reply = match i % 5 {
                0 => b"+OK\r\n".to_vec(),
                1 => b"-ERR unknown\r\n".to_vec(),
                2 => format!(":{}\r\n", n as i64).into_bytes(),
                3 => b"$-1\r\n".to_vec(),
                _ => {
                    let mut r = format!("${}\r\n", payload.len()).into_bytes();
                    r.extend_from_slice(&payload);
                    r.extend_from_slice(b"\r\n");
                    r
                }
            };
            if i % 2 == 0 {
                for cut in 0..reply.len() {
                    assert!(
                        matches!(find(&reply[..cut], limit), Ok(None)),
                        "prefix {cut} of {reply:?}"
                    );
                }
                let got = find(&reply, limit).expect("valid reply");
                assert_eq!(got.map(|(_, used)| used), Some(reply.len()), "{reply:?}");
            } else {
                for _ in 0..=(next() % 4) {
                    let at = (next() as usize) % reply.len();
                    match next() % 3 {
                        0 => reply[at] = (next() % 256) as u8,
                        1 => reply.truncate(at),
                        _ => reply.insert(at, b"\r\n$-:+*"[(next() % 7) as usize]),
                    }
                    if reply.is_empty() {
                        break;
                    }
                }
                if let Ok(Some((f, used))) = find(&reply, limit) {
                    assert!(used <= reply.len(), "{reply:?}");
                    match f {
                        Found::Status(a, b) | Found::Error(a, b) | Found::Bulk(a, b) => {
                            assert!(a <= b && b <= used, "{reply:?}")
                        }
                        Found::Nil | Found::Int(_) => {}
                    }
                }
            }
        }
    }

    #[test]
    fn replies_are_found_only_when_complete() {
        assert!(matches!(found(b""), Ok(None)));
        assert!(matches!(found(b"+OK"), Ok(None)));
        assert!(matches!(found(b"+OK\r\n"), Ok(Some(Found::Status(1, 3)))));
        assert!(matches!(found(b"-ERR x\r\n"), Ok(Some(Found::Error(1, 6)))));
        assert!(matches!(found(b":42\r\n"), Ok(Some(Found::Int(42)))));
        assert!(matches!(found(b"$-1\r\n"), Ok(Some(Found::Nil))));
        assert!(matches!(found(b"$5\r\nhel"), Ok(None)));
        assert!(matches!(found(b"$5\r\nhello\r"), Ok(None)));
        assert!(matches!(
            found(b"$5\r\nhello\r\n"),
            Ok(Some(Found::Bulk(4, 9)))
        ));
        assert!(matches!(
            found(b"$5\r\nhelloXY"),
            Err(CallError::Protocol(_))
        ));
        assert!(matches!(found(b"$x\r\n"), Err(CallError::Protocol(_))));
        assert!(matches!(found(b"*1\r\n"), Err(CallError::Protocol(_))));
        assert!(matches!(found(b"?\r\n"), Err(CallError::Protocol(_))));
        // Found by the property test below: a reply starting with its line end panicked.
        assert!(matches!(found(b"\r\n"), Err(CallError::Protocol(_))));
        // A bulk string announcing more than the limit fails before it is read.
        assert!(matches!(found(b"$2000\r\n"), Err(CallError::TooLarge)));
    }

    #[tokio::test]
    async fn a_call_reads_one_reply_and_refuses_unsolicited_data() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await;
            // The reply in two pieces, then a second reply nobody asked for.
            s.write_all(b"$11\r\nrole:").await.expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b"master\r\n+OK\r\n").await.expect("write");
            let _ = s.read(&mut b).await;
        });
        let mut k = Kept::new(TcpStream::connect(addr).await.expect("connect"));
        let cmd = encode(&[b"INFO", b"replication"]);
        let reply = k.call(&cmd, 1024).await.expect("reply");
        assert_eq!(reply, Reply::Bulk(b"role:master"));
        // The extra reply came with the end of the first one: the connection is not used
        // again.
        let second = k.call(&cmd, 1024).await;
        assert!(matches!(second, Err(CallError::Protocol(_))), "{second:?}");
        drop(k);
        let _ = server.await;
    }

    #[tokio::test]
    async fn a_reply_larger_than_the_buffer_grows_it_up_to_the_limit() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let body = "x".repeat(50_000);
        let reply = format!("${}\r\n{body}\r\n", body.len());
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut b = [0u8; 256];
            for _ in 0..2 {
                let _ = s.read(&mut b).await;
                s.write_all(reply.as_bytes()).await.expect("write");
            }
        });
        let mut k = Kept::new(TcpStream::connect(addr).await.expect("connect"));
        let cmd = encode(&[b"INFO"]);
        match k.call(&cmd, 1 << 20).await.expect("reply") {
            Reply::Bulk(b) => assert_eq!(b.len(), 50_000),
            other => panic!("{other:?}"),
        }
        // The same reply above a smaller limit fails without reading it all.
        assert!(matches!(
            k.call(&cmd, 10_000).await,
            Err(CallError::TooLarge)
        ));
        let _ = server.await;
    }
}
