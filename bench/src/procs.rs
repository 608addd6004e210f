//! Helpers the benchmarks share: free loopback ports, child processes that
//! die with their handle, and the `/proc` readers (CPU seconds, peak
//! resident memory).

use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it for a
/// listener that is closed again; another process may take it in between,
/// which on a benchmark machine it practically never does).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process that is killed and reaped when the handle drops.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
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
        .and_then(|s| parse_vm_hwm_kib(&s))
        .map_or(f64::NAN, |kb| kb as f64 / 1024.0)
}

/// `VmHWM` in KiB from the text of `/proc/PID/status`.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
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
    fn vm_hwm_is_read_in_kib() {
        let s = "Name:\tx\nVmPeak:\t  9999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_vm_hwm_kib(s), Some(2048));
        assert_eq!(parse_vm_hwm_kib("Name:\tx\n"), None);
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
        assert!(peak_rss_mib(u32::MAX).is_nan());
        assert!(cpu_seconds(u32::MAX, tck).is_err());
    }

    #[test]
    fn a_dropped_proc_is_killed_and_reaped() {
        let dir = std::env::temp_dir().join(format!("mpcvit-bench-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = launch(cmd, &dir.join("sleep.log")).unwrap();
        let pid = p.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let t = std::time::Instant::now();
        drop(p);
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "still there");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn free_ports_can_be_bound() {
        // A port is free when `free_port` returns it; another process (or
        // test thread) may take it before the bind below, so the test
        // allows a few tries rather than flaking on that race.
        let bound = (0..5).any(|_| {
            let p = free_port().unwrap();
            assert_ne!(p, 0);
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        assert!(bound, "none of 5 free ports could be bound");
    }
}
