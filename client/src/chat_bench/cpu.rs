//! CPU time of the processes a benchmark watches (`--watch manager=PID`),
//! and of the benchmark itself, over the measured window only: the
//! question is where the cores go while messages flow (is the manager on
//! the message path?), so setup (logins hash passwords on the manager) must
//! not count. Read from `/proc/PID/stat` (utime + stime, every thread), so
//! Linux only; elsewhere the figures are absent, never wrong. The whole
//! machine's busy time (`/proc/stat`) comes too, as `machine`: on a shared
//! machine it shows how much of the cores other work took meanwhile.

use serde::Serialize;
use std::time::Instant;

/// A process to watch: a name for the report and its pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// Parse `NAME=PID` (clap adapter).
pub fn parse_watch(text: &str) -> Result<Watched, String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("--watch takes NAME=PID, not {text:?}"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("--watch {text:?}: {pid:?} is not a process id"))?;
    if name.is_empty() {
        return Err(format!("--watch {text:?}: the name is empty"));
    }
    Ok(Watched {
        name: name.to_string(),
        pid,
    })
}

/// CPU one process used during the window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// The `--watch` name, `bench` for this process, `machine` for every
    /// core of the machine (pid 0).
    pub name: String,
    pub pid: u32,
    /// User plus system time, seconds.
    pub cpu_seconds: f64,
    /// The same divided by the window: 1.0 is one core busy throughout.
    pub cores: f64,
}

/// The readings at the start of a window.
pub(super) struct CpuWindow {
    processes: Vec<Watched>,
    start_ticks: Vec<Option<u64>>,
    start_machine: Option<u64>,
    start: Instant,
}

impl CpuWindow {
    /// Start a window over `watched` and this process.
    pub(super) fn start(watched: &[Watched]) -> CpuWindow {
        let mut processes = watched.to_vec();
        processes.push(Watched {
            name: "bench".into(),
            pid: std::process::id(),
        });
        let start_ticks = processes.iter().map(|w| ticks(w.pid)).collect();
        CpuWindow {
            processes,
            start_ticks,
            start_machine: machine_ticks(),
            start: Instant::now(),
        }
    }

    /// End the window: what each process used (processes that vanished or
    /// cannot be read are left out).
    pub(super) fn finish(self) -> Vec<CpuUse> {
        let seconds = self.start.elapsed().as_secs_f64();
        let per_tick = 1.0 / ticks_per_second();
        let used = |name: String, pid: u32, before: Option<u64>, after: Option<u64>| {
            let used = after?.checked_sub(before?)? as f64 * per_tick;
            Some(CpuUse {
                name,
                pid,
                cpu_seconds: used,
                cores: if seconds > 0.0 { used / seconds } else { 0.0 },
            })
        };
        let machine = used("machine".into(), 0, self.start_machine, machine_ticks());
        self.processes
            .into_iter()
            .zip(self.start_ticks)
            .filter_map(|(w, before)| used(w.name, w.pid, before, ticks(w.pid)))
            .chain(machine)
            .collect()
    }
}

/// utime + stime of `pid`, in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// utime + stime from the text of `/proc/PID/stat`: fields 14 and 15,
/// counted after the command name, which is in parentheses and may itself
/// hold spaces and parentheses (hence the last `)`).
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of every core together: the first line of `/proc/stat`
/// less idle and iowait.
fn machine_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

/// `cpu  user nice system idle iowait irq softirq steal ...` → the busy
/// ones (guest time is already inside user).
fn parse_machine_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let &[user, nice, system, _idle, _iowait, irq, softirq, steal] = values.as_slice() else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// The kernel's clock ticks per second (`_SC_CLK_TCK`, 100 on Linux).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system; it has no
    // preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_and_watch_flags_parse() {
        let stat = "1234 (dupla (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let line = "cpu  100 5 20 900 7 1 2 3 0 0";
        assert_eq!(parse_machine_ticks(line), Some(131));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2"), None);
        assert_eq!(
            parse_watch("manager=42"),
            Ok(Watched {
                name: "manager".into(),
                pid: 42
            })
        );
        for bad in ["manager", "=42", "manager=x", "manager=-1"] {
            assert!(parse_watch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn this_process_is_measured() {
        let window = CpuWindow::start(&[]);
        let used = window.finish();
        let names: Vec<&str> = used.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["bench", "machine"]);
    }
}
