//! Process metrics from `/proc/self` (Linux): CPU time, memory, open files, threads, start time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::time::{SystemTime, UNIX_EPOCH};

/// Reads `/proc/self` at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    start_time: f64,
}

impl ProcessCollector {
    /// Remembers the start time.
    pub fn new() -> ProcessCollector {
        let start_time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        ProcessCollector { start_time }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

/// Kernel clock ticks per second; 100 on every Linux this runs on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;

/// `VmRSS:  1234 kB` and the like from `/proc/self/status`, in bytes.
fn status_kib(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024.0)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are the 14th and 15th fields of stat: 12th and 13th after the name.
            let cpu = (ticks(11) + ticks(12)) / TICKS_PER_SECOND;
            ConstCounter::new(cpu).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, seconds",
                None,
                MetricType::Counter,
            )?)?;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for (name, help, field) in [
                ("process_resident_memory_bytes", "Resident memory, bytes", "VmRSS:"),
                ("process_virtual_memory_bytes", "Virtual memory, bytes", "VmSize:"),
            ] {
                if let Some(bytes) = status_kib(&status, field) {
                    ConstGauge::new(bytes).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
                }
            }
            let threads =
                status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse::<i64>().ok());
            if let Some(threads) = threads {
                ConstGauge::new(threads).encode(encoder.encode_descriptor(
                    "process_threads",
                    "OS threads",
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            ConstGauge::new(fds.count() as i64).encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstGauge::new(self.start_time).encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time since the Unix epoch, seconds",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}
