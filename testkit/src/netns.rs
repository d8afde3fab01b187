//! Linux network namespaces for real-process network tests: every node is a
//! host of its own (a namespace with one veth link to a bridge in a private
//! "hub" namespace), so a link can be cut and healed like a cable.
//!
//! Nothing touches the root namespace's network: the bridge, the hub ends of
//! the links and the subnet live in namespaces created here, named after the
//! test process's pid, and deleted when the [`Lab`] is dropped (also during
//! a panic). Namespaces left by a run that was killed (its pid is gone) are
//! deleted by the next run. Building a lab needs root; when the system
//! refuses, [`Lab::build`] returns the reason so the caller can skip.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace this module creates: `duplanet-<pid>-<n>-<host>`.
const NS_PREFIX: &str = "duplanet-";

/// Labs built by this process, so two in one test binary get distinct names.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Run `ip` with `args`; `Err` carries its stderr (or why it did not run).
pub fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (is iproute2 installed?): {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One host of a [`Lab`]: a namespace with an address on the lab's subnet.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name given by the test (`manager`, `server-1`, ...).
    pub name: String,
    /// Namespace name (for `ip netns exec`).
    pub ns: String,
    /// IPv4 address inside the namespace.
    pub ip: String,
    /// The link's end in the hub namespace; setting it down cuts the host off.
    hub_if: String,
}

/// A bridge in a hub namespace and hosts linked to it, torn down on drop.
#[derive(Debug)]
pub struct Lab {
    hub: String,
    hosts: Vec<Host>,
    /// Every namespace created so far (hub first), for teardown.
    created: Vec<String>,
}

impl Lab {
    /// Build a lab with one host per name in `hosts`, on 10.77.X.0/24.
    /// `Err` says why the system refused (not root, no `ip`, the kernel
    /// refused namespaces, bridges or veth pairs); whatever was created is
    /// removed again.
    pub fn build(hosts: &[&str]) -> Result<Lab, String> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{pid}-{n}");
        // The subnet only exists inside the lab's namespaces; X varies with
        // the pid anyway so captures from two runs are easy to tell apart.
        let net = 1 + (pid + n) % 250;
        // Interface names: at most 15 bytes; "dp" + pid (<= 7 digits) + tag.
        let tag = format!("dp{}", pid % 10_000_000);
        let mut lab = Lab {
            hub: format!("{base}-hub"),
            hosts: Vec::new(),
            created: Vec::new(),
        };
        ip(&["netns", "add", &lab.hub])?;
        lab.created.push(lab.hub.clone());
        let bridge = format!("{tag}br{n}");
        ip(&["-n", &lab.hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &lab.hub, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", &lab.hub, "link", "set", &bridge, "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let ns = format!("{base}-{name}");
            ip(&["netns", "add", &ns])?;
            lab.created.push(ns.clone());
            let hub_if = format!("{tag}h{i}");
            let host_if = format!("{tag}n{i}");
            // Create the pair in the hub, with its other end straight in the
            // host's namespace: nothing ever appears in the root namespace.
            ip(&[
                "-n", &lab.hub, "link", "add", &hub_if, "type", "veth", "peer", "name", &host_if,
                "netns", &ns,
            ])?;
            ip(&["-n", &lab.hub, "link", "set", &hub_if, "master", &bridge])?;
            ip(&["-n", &lab.hub, "link", "set", &hub_if, "up"])?;
            let addr = format!("10.77.{net}.{}", 10 + i);
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &host_if,
            ])?;
            ip(&["-n", &ns, "link", "set", &host_if, "up"])?;
            lab.hosts.push(Host {
                name: name.to_string(),
                ns,
                ip: addr,
                hub_if,
            });
        }
        Ok(lab)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// Cut `host` off from every other host (its link's hub end goes down),
    /// or connect it again.
    pub fn set_link(&self, host: &Host, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &host.hub_if, state])
            .unwrap_or_else(|e| panic!("cannot set {}'s link {state}: {e}", host.name));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Host namespaces first (a process still inside one keeps it alive
        // only as long as it runs), then the hub with the bridge.
        for ns in self.created.iter().rev() {
            kill_namespace_processes(ns);
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netns teardown: {e}");
            }
        }
    }
}

/// SIGKILL the processes still running in `ns` (only ever a namespace this
/// module created, so only processes a test started there).
fn kill_namespace_processes(ns: &str) {
    let Ok(out) = ip(&["netns", "pids", ns]) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

/// Delete namespaces left behind by earlier runs whose process is gone
/// (killed before their [`Lab`] was dropped).
fn remove_stale_namespaces() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_namespace_processes(ns);
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Whether `setpriv --pdeathsig` is available: children started through it
/// die with the thread that started them, even if the test is SIGKILLed.
fn has_pdeathsig() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("setpriv")
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("pdeathsig"))
            .unwrap_or(false)
    })
}

/// `program args...` run inside `host`'s namespace, from `dir`.
pub fn command_in(host: &Host, dir: &Path, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.ns]);
    if has_pdeathsig() {
        cmd.args(["setpriv", "--pdeathsig", "KILL", "--"]);
    }
    cmd.arg(program).args(args).current_dir(dir);
    cmd
}

/// A node process running inside a lab host, SIGKILLed when dropped.
pub struct NsProcess {
    /// The node's name.
    pub name: String,
    /// Its directory (with `node.log`).
    pub dir: std::path::PathBuf,
    child: Option<Child>,
}

impl NsProcess {
    /// Start `program` (a path) in `host`'s namespace from `dir` with `args`;
    /// stdout and stderr go to `dir/node.log`.
    pub fn start(host: &Host, program: &Path, dir: &Path, args: &[&str]) -> NsProcess {
        let log = std::fs::File::create(dir.join("node.log")).expect("log file");
        // `ip netns exec` and `setpriv` exec the program: the child's pid is
        // the node's.
        let child = command_in(host, dir, program, args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} in {}: {e}", program.display(), host.ns));
        NsProcess {
            name: host.name.clone(),
            dir: dir.to_path_buf(),
            child: Some(child),
        }
    }

    /// The node's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// SIGKILL the node and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
