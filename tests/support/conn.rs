//! One persistent RESP connection for writers (tests and benches): short socket timeouts,
//! replies flattened to text, errors as `Err`. Independent of the code under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    /// Connect to 127.0.0.1:`port` within `connect`; every read and write is bounded by `io`.
    pub fn open_with(port: u16, connect: Duration, io: Duration) -> Result<Conn, String> {
        let s = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            connect,
        )
        .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(io)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(io)).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        Ok(Conn { w: s, r })
    }

    /// One command; the reply flattened (arrays become space-separated elements).
    pub fn call(&mut self, args: &[&str]) -> Result<String, String> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w
            .write_all(out.as_bytes())
            .map_err(|e| e.to_string())?;
        self.reply()
    }

    /// SET key value; Ok only for `+OK`.
    pub fn set(&mut self, key: &str, val: &str) -> Result<(), String> {
        match self.call(&["SET", key, val])? {
            r if r == "OK" => Ok(()),
            r => Err(format!("reply {r:?}")),
        }
    }

    fn reply(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end().to_string();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" | ":" => Ok(rest.to_string()),
            "-" => Err(rest.to_string()),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| "bad bulk length")?;
                if len < 0 {
                    return Ok(String::new());
                }
                let mut buf = vec![0u8; len as usize + 2];
                self.r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(len as usize);
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| "bad array length")?;
                let mut parts = Vec::new();
                for _ in 0..n.max(0) {
                    parts.push(self.reply()?);
                }
                Ok(parts.join(" "))
            }
            _ => Err(format!("reply {line:?}")),
        }
    }
}
