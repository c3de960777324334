//! Resident memory and CPU time of a process on this machine, from `/proc`.

use std::time::Duration;

/// A reading of a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) rss_bytes: u64,
    pub(crate) cpu: Duration,
}

/// Reads `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/stat` (utime + stime).
pub(crate) fn read(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Ok(Usage { rss_bytes: rss_kib * 1024, cpu: Duration::from_millis(ticks * 10) })
}

/// The sum over `pids` (the nodes of a cluster on this machine); `None` without pids.
pub(crate) fn read_all(pids: &[u32]) -> anyhow::Result<Option<Usage>> {
    let mut total: Option<Usage> = None;
    for pid in pids {
        let usage = read(*pid)?;
        let sum = total.get_or_insert(Usage { rss_bytes: 0, cpu: Duration::ZERO });
        sum.rss_bytes += usage.rss_bytes;
        sum.cpu += usage.cpu;
    }
    Ok(total)
}
