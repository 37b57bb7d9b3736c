//! What the kernel knows of a contender: its processes, their CPU time and peak memory, and the
//! CPU they may run on.

use std::process::Command;
use std::sync::OnceLock;

/// `root` and every process descended from it (nginx's workers, say).
pub fn tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?.get(1)?.parse().ok()?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found
}

/// User plus system CPU seconds used so far by `pids`.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&pid| {
            let fields = stat_fields(pid)?;
            // After the command: state, ppid, …; utime and stime are fields 14 and 15 of stat.
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    ticks as f64 / clock_ticks() as f64
}

/// The sum of `pids`' peak resident memory, KiB (VmHWM).
pub fn peak_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&pid| tests::peak_rss_kib(pid)).sum()
}

/// Pins every thread of `pids` to `cpu` (`taskset`; threads started later inherit it).
pub fn pin(pids: &[u32], cpu: usize) {
    for pid in pids {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run taskset (util-linux)");
        assert!(status.success(), "taskset could not pin {pid} to CPU {cpu}");
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): state first.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The kernel's clock ticks per second, in which `/proc` counts CPU time.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100)
    })
}
