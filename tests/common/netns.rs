//! A network namespace joined to this one by a veth pair, to cut a server off the
//! network (a partition) and heal it again. Only addresses this module creates on both
//! ends of the pair (169.254.X.Y/30, link-local) are used. Dropping the guard removes
//! the pair and the namespace, also when the test panics.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How a partition is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// The namespace's end of the pair goes down: packets are silently dropped (timeouts).
    PeerDown,
    /// This side's end goes down: the route disappears (immediate "unreachable").
    HostDown,
    /// `tc netem loss 100%` on both ends (falls back to `PeerDown` if netem is missing).
    Loss,
}

pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_ip: String,
    /// The namespace's address: what a server inside listens on.
    pub ns_ip: String,
    cut: Option<CutMode>,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here (`None` = they can).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some(format!(
            "not root (uid {uid:?}): cannot create network namespaces"
        ));
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Some("no `ip` binary (iproute2)".into());
    }
    None
}

impl Netns {
    /// Create a namespace and veth pair with unique names; `Err` explains why not
    /// (the caller skips the test with that message).
    pub fn create() -> Result<Netns, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{k:x}", pid % 0xfffff);
        let octet3 = 1 + (pid.wrapping_mul(31).wrapping_add(k * 7) % 160);
        let base = 4 * (k % 60);
        let ns = Netns {
            name: format!("csdiff-{tag}"),
            host_if: format!("csh{tag}"),
            ns_if: format!("csn{tag}"),
            host_ip: format!("169.254.{octet3}.{}", base + 1),
            ns_ip: format!("169.254.{octet3}.{}", base + 2),
            cut: None,
        };
        ns.setup().inspect_err(|_| ns.teardown())?;
        Ok(ns)
    }

    fn setup(&self) -> Result<(), String> {
        run(&["ip", "netns", "add", &self.name])?;
        run(&[
            "ip",
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.ns_if,
        ])?;
        run(&["ip", "link", "set", &self.ns_if, "netns", &self.name])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", self.host_ip),
            "dev",
            &self.host_if,
        ])?;
        run(&["ip", "link", "set", &self.host_if, "up"])?;
        self.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", self.ns_ip),
            "dev",
            &self.ns_if,
        ])?;
        self.exec(&["ip", "link", "set", &self.ns_if, "up"])?;
        self.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn exec(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Cut the link; returns the mode actually used.
    pub fn cut(&mut self, mode: CutMode) -> Result<CutMode, String> {
        let used = match mode {
            CutMode::PeerDown => {
                self.exec(&["ip", "link", "set", &self.ns_if, "down"])?;
                CutMode::PeerDown
            }
            CutMode::HostDown => {
                run(&["ip", "link", "set", &self.host_if, "down"])?;
                CutMode::HostDown
            }
            CutMode::Loss => {
                let host = run(&[
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    &self.host_if,
                    "root",
                    "netem",
                    "loss",
                    "100%",
                ]);
                match host {
                    Ok(()) => {
                        let _ = self.exec(&[
                            "tc",
                            "qdisc",
                            "add",
                            "dev",
                            &self.ns_if,
                            "root",
                            "netem",
                            "loss",
                            "100%",
                        ]);
                        CutMode::Loss
                    }
                    Err(_) => {
                        self.exec(&["ip", "link", "set", &self.ns_if, "down"])?;
                        CutMode::PeerDown
                    }
                }
            }
        };
        self.cut = Some(used);
        Ok(used)
    }

    /// Undo [`Netns::cut`].
    pub fn heal(&mut self) -> Result<(), String> {
        match self.cut.take() {
            None => Ok(()),
            Some(CutMode::PeerDown) => self.exec(&["ip", "link", "set", &self.ns_if, "up"]),
            Some(CutMode::HostDown) => {
                run(&["ip", "link", "set", &self.host_if, "up"])?;
                // The address's route comes back with the link; nothing else to restore.
                Ok(())
            }
            Some(CutMode::Loss) => {
                let _ = self.exec(&["tc", "qdisc", "del", "dev", &self.ns_if, "root"]);
                run(&["tc", "qdisc", "del", "dev", &self.host_if, "root"])
            }
        }
    }

    fn teardown(&self) {
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.heal();
        self.teardown();
    }
}
