//! The one place that builds the wire commands sent to Redis/Pika nodes, as plain data.
//!
//! [`Dialect`] knows the cluster's `rename-command` map; its methods return [`Command`]s
//! (a name and its arguments). [`super::redis::RedisNodes`] sends exactly these, and the plan
//! rendering of `decide` prints them from the same methods, so what `plan` shows is what is sent.
//!
//! A password is never part of a command: [`Arg::Password`] is a placeholder that only the
//! sender replaces with the cluster's password at the last moment; `Display` prints `<password>`.
//!
//! Dialect decisions (pika.md §2): only `SLAVEOF` (Pika has no `REPLICAOF`), `force` is the
//! literal word (Pika rejects `-f`), write fencing on Pika 4.x is `ACL SETUSER default -@write`,
//! a foreign ReplicationID is dropped with `CLEARREPLICATIONID`, stale clients are closed with
//! `CLIENT KILL TYPE normal`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::model::Addr;

/// One argument of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Word(String),
    /// The cluster's password, filled in by the sender; shown as `<password>`.
    Password,
}

/// A command as sent on the wire: the name (after renames) and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub name: String,
    pub args: Vec<Arg>,
}

impl Command {
    fn new(name: &str, args: &[&str]) -> Command {
        Command {
            name: name.to_string(),
            args: args.iter().map(|a| Arg::Word((*a).to_string())).collect(),
        }
    }

    fn arg(mut self, a: Arg) -> Command {
        self.args.push(a);
        self
    }

    /// True if the command carries the password (the sender must have one to fill in).
    pub fn has_password(&self) -> bool {
        self.args.contains(&Arg::Password)
    }
}

impl fmt::Display for Command {
    /// The command as an operator would type it, the password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for a in &self.args {
            match a {
                Arg::Word(w) => write!(f, " {w}")?,
                Arg::Password => f.write_str(" <password>")?,
            }
        }
        Ok(())
    }
}

/// The commands of one cluster's nodes, under their `rename-command` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dialect {
    /// Upper-case original name -> name on the nodes.
    renames: BTreeMap<String, String>,
}

impl Dialect {
    /// `renames`: original name -> renamed (e.g. `ClusterConfig::renames`). Keys are matched
    /// case-insensitively; empty values are ignored (config validation rejects them).
    pub fn new(renames: BTreeMap<String, String>) -> Dialect {
        Dialect {
            renames: renames
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_ascii_uppercase(), v))
                .collect(),
        }
    }

    /// The name a command has on the nodes (`name` itself unless renamed). There is no
    /// fallback to the original: a wrong map is loud ("unknown command"), not half-working.
    pub fn name<'a>(&'a self, name: &'a str) -> &'a str {
        self.renames
            .get(&name.to_ascii_uppercase())
            .map(String::as_str)
            .unwrap_or(name)
    }

    /// Any command by its original name (diagnostics and tests).
    pub fn command(&self, name: &str, args: &[&str]) -> Command {
        Command::new(self.name(name), args)
    }

    /// `INFO <section>`.
    pub fn info(&self, section: &str) -> Command {
        self.command("INFO", &[section])
    }

    /// `SLAVEOF NO ONE`.
    pub fn promote(&self) -> Command {
        self.command("SLAVEOF", &["NO", "ONE"])
    }

    /// `SLAVEOF host port [force]` (the literal word; only ever asked for Pika).
    pub fn follow(&self, master: &Addr, force: bool) -> Command {
        let port = master.port.to_string();
        let mut args = vec![master.host.as_str(), port.as_str()];
        if force {
            args.push("force");
        }
        self.command("SLAVEOF", &args)
    }

    /// `CONFIG SET masterauth <password>`.
    pub fn masterauth(&self) -> Command {
        self.command("CONFIG", &["SET", "masterauth"])
            .arg(Arg::Password)
    }

    /// `CONFIG REWRITE`.
    pub fn rewrite(&self) -> Command {
        self.command("CONFIG", &["REWRITE"])
    }

    /// Redis `CLIENT PAUSE <ms> WRITE` (at least 1 ms).
    pub fn pause(&self, for_how_long: Duration) -> Command {
        let ms = for_how_long.as_millis().max(1).to_string();
        self.command("CLIENT", &["PAUSE", &ms, "WRITE"])
    }

    /// Redis `CLIENT UNPAUSE`.
    pub fn unpause(&self) -> Command {
        self.command("CLIENT", &["UNPAUSE"])
    }

    /// Pika 3.5.1+: `CLEARREPLICATIONID` (empties the node's ReplicationID, so its next
    /// MetaSync takes the master's and does a full sync). Refused on a slave (`READONLY`).
    pub fn clear_replication_id(&self) -> Command {
        self.command("CLEARREPLICATIONID", &[])
    }

    /// `CLIENT KILL TYPE normal`: close every normal client connection (not the caller's, not
    /// replication links). Redis answers the count, Pika 3.5.5+/4.x `+OK`.
    pub fn kill_clients(&self) -> Command {
        self.command("CLIENT", &["KILL", "TYPE", "normal"])
    }

    /// `BGSAVE`: Pika writes a dump dir (`dump-path` + `dump-prefix` + the date), Redis the
    /// RDB file `dir` + `dbfilename`.
    pub fn bgsave(&self) -> Command {
        self.command("BGSAVE", &[])
    }

    /// `CONFIG GET <key>`.
    pub fn config_get(&self, key: &str) -> Command {
        self.command("CONFIG", &["GET", key])
    }

    /// `CONFIG SET <key> <value>` (never the password: see [`Dialect::masterauth`]).
    pub fn config_set(&self, key: &str, value: &str) -> Command {
        self.command("CONFIG", &["SET", key, value])
    }

    /// Pika 4.x: `ACL SETUSER default -@write` (fenced) or `+@write`.
    pub fn fence(&self, fenced: bool) -> Command {
        let rule = if fenced { "-@write" } else { "+@write" };
        self.command("ACL", &["SETUSER", "default", rule])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_names_and_redacted_password() {
        let d = Dialect::new(BTreeMap::from([
            ("slaveof".to_string(), "sl4ve0f-x".to_string()),
            ("CONFIG".to_string(), "c0nf1g-x".to_string()),
            ("INFO".to_string(), String::new()),
        ]));
        let master = Addr::new("127.0.0.1", 6380);
        assert_eq!(
            d.follow(&master, true).to_string(),
            "sl4ve0f-x 127.0.0.1 6380 force"
        );
        assert_eq!(d.promote().to_string(), "sl4ve0f-x NO ONE");
        assert_eq!(
            d.masterauth().to_string(),
            "c0nf1g-x SET masterauth <password>"
        );
        assert!(d.masterauth().has_password());
        assert_eq!(d.info("server").to_string(), "INFO server");
        assert_eq!(
            d.pause(Duration::from_millis(0)).to_string(),
            "CLIENT PAUSE 1 WRITE"
        );
        assert_eq!(d.fence(true).to_string(), "ACL SETUSER default -@write");
        assert_eq!(d.fence(false).to_string(), "ACL SETUSER default +@write");
        assert_eq!(d.name("PING"), "PING");
        assert_eq!(d.clear_replication_id().to_string(), "CLEARREPLICATIONID");
        assert_eq!(d.kill_clients().to_string(), "CLIENT KILL TYPE normal");
        assert_eq!(d.bgsave().to_string(), "BGSAVE");
        assert_eq!(
            d.config_set("dump-prefix", "x-").to_string(),
            "c0nf1g-x SET dump-prefix x-"
        );
    }
}
