//! Resident memory and CPU time of a server: from `/proc` for a process on this machine, or
//! from a node's Prometheus endpoint (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`) for one elsewhere.

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

/// Reads a node's `/metrics` (plain HTTP/1.1, `http://host:port/path`).
pub(crate) fn read_metrics(url: &str) -> anyhow::Result<Usage> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url}: only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let address = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url}: no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    parse_metrics(&text)
        .ok_or_else(|| anyhow::anyhow!("{url}: no process_resident_memory_bytes / process_cpu_seconds_total"))
}

/// Picks the process gauges out of a Prometheus text exposition.
fn parse_metrics(text: &str) -> Option<Usage> {
    let value = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    let rss_bytes = value("process_resident_memory_bytes")? as u64;
    let cpu = Duration::from_secs_f64(value("process_cpu_seconds_total")?);
    Some(Usage { rss_bytes, cpu })
}

/// The sum over local `pids` and remote `metrics` URLs (the nodes of a cluster); `None`
/// without either.
pub(crate) fn read_all(pids: &[u32], metrics: &[String]) -> anyhow::Result<Option<Usage>> {
    let readings = pids.iter().map(|pid| read(*pid)).chain(metrics.iter().map(|url| read_metrics(url)));
    let mut total: Option<Usage> = None;
    for usage in readings {
        let usage = usage?;
        let sum = total.get_or_insert(Usage { rss_bytes: 0, cpu: Duration::ZERO });
        sum.rss_bytes += usage.rss_bytes;
        sum.cpu += usage.cpu;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_gauges_from_a_prometheus_page() {
        let page = "# HELP process_resident_memory_bytes x\nprocess_resident_memory_bytes 52428800\n\
                    process_cpu_seconds_total 12.5\nprocess_cpu_seconds_total_other 1\n";
        let usage = parse_metrics(page).unwrap();
        assert_eq!(usage.rss_bytes, 52_428_800);
        assert_eq!(usage.cpu, Duration::from_millis(12_500));
        assert!(parse_metrics("switchboard_ready 1\n").is_none());
    }
}
