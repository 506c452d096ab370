//! Process sampling from `/proc` (CPU ticks, peak RSS, TCP opens) and child
//! processes stopped by a drop guard.

use std::{
    fs,
    net::TcpListener,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use crate::Res;

/// utime + stime of a whole process (all threads), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sum of `cpu_ticks` over several processes.
fn cpu_ticks_all(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_ticks(p)).sum()
}

/// Busy ticks of the whole machine (all CPUs), from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    total.saturating_sub(v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0))
}

/// Peak resident set size in KiB (VmHWM).
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The broker's processes (beam.smp), for the CPU split.
pub fn broker_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "beam.smp")
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// TCP connections opened by this machine so far (`ActiveOpens`).
pub fn tcp_active_opens() -> u64 {
    let s = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// CPU use of each party over a measured window.
#[derive(Clone, Copy, Default)]
pub struct Split {
    pub worker: u64,
    pub api: u64,
    pub broker: u64,
    pub bench: u64,
    pub machine: u64,
}

impl Split {
    /// Busy ticks of the machine outside the parties above.
    pub fn other(&self) -> u64 {
        self.machine
            .saturating_sub(self.worker + self.api + self.broker + self.bench)
    }
}

#[derive(Clone)]
pub struct SplitProbe {
    pub worker: Option<u32>,
    pub api: Vec<u32>,
    pub broker: Vec<u32>,
}

impl SplitProbe {
    pub fn read(&self) -> Split {
        Split {
            worker: self.worker.and_then(cpu_ticks).unwrap_or(0),
            api: cpu_ticks_all(&self.api),
            broker: cpu_ticks_all(&self.broker),
            bench: cpu_ticks(std::process::id()).unwrap_or(0),
            machine: machine_busy_ticks(),
        }
    }
}

impl std::ops::Sub for Split {
    type Output = Split;
    fn sub(self, o: Split) -> Split {
        Split {
            worker: self.worker.saturating_sub(o.worker),
            api: self.api.saturating_sub(o.api),
            broker: self.broker.saturating_sub(o.broker),
            bench: self.bench.saturating_sub(o.bench),
            machine: self.machine.saturating_sub(o.machine),
        }
    }
}

/// Stops a child on drop: SIGTERM, up to 10 s to exit, then SIGKILL.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Res<ChildGuard> {
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {name} ({}): {e}",
                cmd.get_program().to_string_lossy()
            )
        })?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM and wait; returns the exit status if it exited in time.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "  {} did not stop on SIGTERM within 10 s; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}
