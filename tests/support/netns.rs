//! Linux network namespaces for the chaos harness (needs root and `ip` from iproute2).
//!
//! One namespace per node: a veth pair with the root side `10.77.<k>.1/24` and the namespace
//! side `10.77.<k>.2/24`, `lo` up inside, and a default route via `10.77.<k>.1`. A process run
//! inside with [`Netns::exec`] (`ip netns exec` execs, so the pid is the program's) reaches the
//! root namespace's addresses through its veth, and its connections arrive there from
//! `10.77.<k>.2`: a proxy in the root namespace can tell which node connects. Traffic stays on
//! the machine (the /16 is only routed between the veth pairs).
//!
//! Names carry the test process' pid (`prc-<pid>-<k>`, veths `prc<pid>r<k>` / `prc<pid>n<k>`),
//! so parallel test processes do not clash; namespaces and root-side veths of dead pids are
//! removed by [`Netns::create`], and everything of a `Netns` on its Drop. The `<k>`s are picked
//! among the /24s of 10.77.0.0/16 that no interface uses yet.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Run `ip <args>`; Err with its stderr on failure.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "run ip {}: {e} (install the Debian package iproute2)",
                args.join(" ")
            )
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here (not root, no `ip`), or Ok.
pub fn available() -> Result<(), String> {
    // The effective uid, from /proc.
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        return Err(format!(
            "network namespaces need root (effective uid {euid}); run as root"
        ));
    }
    ip(&["netns", "list"]).map(|_| ())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove namespaces (`prc-<pid>-<k>`) and root-side veths (`prc<pid>r<k>`) of dead pids.
pub fn remove_stale() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let pid = name
                .strip_prefix("prc-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for l in links.lines() {
            // "12: prc123r0@if11: <...>"
            let Some(name) = l.split(':').nth(1).map(|n| n.trim()) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            let pid = name
                .strip_prefix("prc")
                .and_then(|r| r.split('r').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !pid_alive(p)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// `count` free /24s of 10.77.0.0/16 (the third octet), none used by any interface.
pub fn free_subnets(count: usize) -> Result<Vec<u8>, String> {
    let used = ip(&["-br", "addr"])?;
    let taken: Vec<u8> = used
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("10.77."))
        .filter_map(|r| r.split('.').next())
        .filter_map(|o| o.parse().ok())
        .collect();
    // Start at a pid-derived octet so two test processes rarely race for the same ones.
    let start = (std::process::id() % 200) as u16;
    let mut out = Vec::new();
    for i in 0..250u16 {
        let k = ((start + i) % 250) as u8;
        if !taken.contains(&k) {
            out.push(k);
            if out.len() == count {
                return Ok(out);
            }
        }
    }
    Err("no free /24 in 10.77.0.0/16".into())
}

/// One namespace with its veth pair. Deleted on Drop.
pub struct Netns {
    pub name: String,
    /// Root-side veth (`10.77.<k>.1`).
    pub host_if: String,
    /// Namespace-side veth (`10.77.<k>.2`).
    pub ns_if: String,
    pub root_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl Netns {
    /// Namespace number `index` of this process on the /24 `10.77.<k>.0`.
    pub fn create(index: u8, k: u8) -> Result<Netns, String> {
        remove_stale();
        let pid = std::process::id();
        let n = Netns {
            name: format!("prc-{pid}-{index}"),
            host_if: format!("prc{pid}r{index}"),
            ns_if: format!("prc{pid}n{index}"),
            root_ip: Ipv4Addr::new(10, 77, k, 1),
            ns_ip: Ipv4Addr::new(10, 77, k, 2),
        };
        // Leftovers of this pid (a previous world in the same process) go first.
        let _ = ip(&["netns", "del", &n.name]);
        let _ = ip(&["link", "del", &n.host_if]);
        let root = format!("{}/24", n.root_ip);
        let inner = format!("{}/24", n.ns_ip);
        let gw = n.root_ip.to_string();
        ip(&["netns", "add", &n.name])?;
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.ns_if,
        ])?;
        ip(&["link", "set", &n.ns_if, "netns", &n.name])?;
        ip(&["addr", "add", &root, "dev", &n.host_if])?;
        ip(&["link", "set", &n.host_if, "up"])?;
        let x = |args: &[&str]| {
            let mut full = vec!["netns", "exec", n.name.as_str(), "ip"];
            full.extend_from_slice(args);
            ip(&full)
        };
        x(&["addr", "add", &inner, "dev", &n.ns_if])?;
        x(&["link", "set", &n.ns_if, "up"])?;
        x(&["link", "set", "lo", "up"])?;
        x(&["route", "add", "default", "via", &gw])?;
        Ok(n)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec <ns> program`).
    pub fn exec(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end and with it the root side.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
