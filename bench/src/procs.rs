//! The one home of the process helpers that the benchmarks (`mpcvit-bench`,
//! the e2e example) and the cross-process test suites (`tests/`, the
//! `mpcvit-e2e` crate) share: free loopback ports, child processes that die
//! with their handle (launched with their log, stopped with SIGTERM, waited
//! for with a bound), and the `/proc` readers (CPU seconds, resident memory).

use std::io;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it for a
/// listener that is closed again), never handed out twice by this process:
/// tests running in parallel each get their own. Another process may take
/// it in between, which on a test or benchmark machine it practically never
/// does.
pub fn free_port() -> io::Result<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&p) {
            given.push(p);
            return Ok(p);
        }
    }
}

/// A child process that is killed and reaped when the handle drops.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Send SIGTERM (as Kubernetes and compose stop containers), with
    /// `kill(1)`.
    pub fn terminate(&self) -> io::Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()?
            .success();
        if ok {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -TERM {} failed", self.id())))
        }
    }

    /// Whether the process is still running (not exited, or exited and not
    /// yet reaped by this handle).
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Wait at most `within` for the process to exit: its exit status, or
    /// `None` if it is still running.
    pub fn wait_timeout(&mut self, within: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` with its standard error (where the servers log) written to
/// `log`, standard input closed and standard output discarded.
pub fn launch(mut cmd: Command, log: &Path) -> io::Result<Proc> {
    let f = std::fs::File::create(log)?;
    Ok(Proc(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()?,
    ))
}

/// CPU seconds (user + system, all threads) a process has used so far,
/// from `/proc/PID/stat` (fields 14 and 15, in clock ticks).
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu_ticks(&stat)
        .map(|t| t as f64 / ticks_per_second)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat"))
}

/// utime + stime from the text of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is fields[0], so 14 and 15 are 11 and 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident memory of a process in MiB (`VmHWM` in `/proc/PID/status`);
/// NaN when it cannot be read (the process is gone).
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_status_kib(&s, "VmHWM"))
        .map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// Resident memory of a process now, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, "VmRSS")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/PID/status"))
}

/// A `kB` field (`VmHWM`, `VmRSS`, ...) in KiB from the text of
/// `/proc/PID/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `2 cores, 23 GiB`: this machine's CPU count and memory, for result pages.
pub fn machine_summary() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / (1024.0 * 1024.0));
    format!("{cores} cores, {mem_gib:.0} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A name with spaces and a parenthesis; utime 1234, stime 56.
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194304 100 0 0 0 1234 56 0 0 20 0 3 0 99 1000 200";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1290));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no name here"), None);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let s = "Name:\tx\nVmPeak:\t  9999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib("Name:\tx\n", "VmHWM"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let pid = std::process::id();
        let tck = clock_ticks_per_second();
        let before = cpu_seconds(pid, tck).unwrap();
        // Burn at least 0.3 s of CPU (ticks are 10 ms).
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_seconds(pid, tck).unwrap();
        assert!(after - before >= 0.1, "{before} → {after}");
        let rss = peak_rss_mib(pid);
        assert!(rss > 0.5 && rss < 1e6, "{rss}");
        let now = rss_kib(pid).unwrap() as f64 / 1024.0;
        assert!(now > 0.5 && now <= rss + 1.0, "{now} of {rss}");
        assert!(peak_rss_mib(u32::MAX).is_nan());
        assert!(rss_kib(u32::MAX).is_err());
        assert!(cpu_seconds(u32::MAX, tck).is_err());
    }

    #[test]
    fn a_dropped_proc_is_killed_and_reaped() {
        let dir = std::env::temp_dir().join(format!("mpcvit-bench-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = launch(cmd, &dir.join("sleep.log")).unwrap();
        let pid = p.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(p.running());
        assert_eq!(p.wait_timeout(Duration::from_millis(50)).unwrap(), None);
        let t = std::time::Instant::now();
        drop(p);
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "still there");
        // SIGTERM ends it, and the wait sees the exit.
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = launch(cmd, &dir.join("sleep.log")).unwrap();
        p.terminate().unwrap();
        let status = p.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        assert!(!p.running());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn free_ports_can_be_bound() {
        // A port is free when `free_port` returns it; another process (or
        // test thread) may take it before the bind below, so the test
        // allows a few tries rather than flaking on that race.
        let ports: Vec<u16> = (0..5).map(|_| free_port().unwrap()).collect();
        assert!(ports.iter().all(|&p| p != 0));
        let bound = ports
            .iter()
            .any(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        assert!(bound, "none of 5 free ports could be bound");
        // Never the same port twice in one process.
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }
}
