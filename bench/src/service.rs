//! The service under test: spawned (`orderflow serve`, a fresh data folder, port 0) or reached at `--url`; and
//! what `/proc` tells about it (RSS, CPU time) and about the machine.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The line `orderflow serve` prints once it listens.
const LISTENING: &str = "orderflow listening on ";

/// A service this bench started; stopped (SIGTERM, then SIGKILL after 30 s) by [`Spawned::stop`].
pub struct Spawned {
    child: Child,
    pub pid: u32,
    pub url: String,
    data_dir: PathBuf,
    keep_data: bool,
}

impl Spawned {
    /// Starts `<bin> [--config FILE] serve` with the data in `data_dir` (which must not exist yet), port 0,
    /// auth on with `secret`. The environment's `ORDERFLOW__*` settings pass through (so any setting can be
    /// changed for a run), except the ones above.
    pub fn start(
        bin: &Path,
        config: Option<&Path>,
        data_dir: PathBuf,
        secret: &str,
        keep_data: bool,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let mut cmd = Command::new(bin);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("serve")
            .env("ORDERFLOW__DATA_DIR", &data_dir)
            .env("ORDERFLOW__SERVER__HOST", "127.0.0.1")
            .env("ORDERFLOW__SERVER__PORT", "0")
            .env("ORDERFLOW__AUTH__ENABLED", "true")
            .env("ORDERFLOW__AUTH__JWT_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("ORDERFLOW__LOG__LEVEL").is_none() && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("ORDERFLOW__LOG__LEVEL", "warn");
        }
        let mut child = cmd.spawn().with_context(|| format!("starting `{} serve`", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("the service's stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the listening line, then keeps draining stdout so the service never blocks on a full pipe.
        std::thread::Builder::new().name("bench-service-stdout".into()).spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(url) = line.strip_prefix(LISTENING) {
                    let _ = tx.send(url.trim().to_owned());
                    sent = true;
                }
            }
        })?;
        let mut spawned = Self { child, pid, url: String::new(), data_dir, keep_data };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(url) => {
                    spawned.url = url;
                    return Ok(spawned);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = spawned.child.try_wait()? {
                        bail!("the service exited before listening ({status})");
                    }
                }
                Err(_) => {
                    spawned.stop();
                    bail!("the service did not print `{LISTENING}…` within 120 s");
                }
            }
        }
    }

    /// SIGTERM (the service drains and exits 0), SIGKILL if it is still there after 30 s; then removes the
    /// data folder unless asked to keep it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The service binary: `--service-bin`, else `orderflow` next to this executable (cargo builds both into
/// the same `target/<profile>/`).
pub fn service_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let bin = exe.with_file_name(format!("orderflow{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "no service binary at {} (build it with `cargo build --release --workspace`, or pass --service-bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A fresh folder for a spawned service's data: `<base>/orderflow-bench-<pid>-<n>`.
pub fn fresh_data_dir(base: Option<&Path>, tag: &str) -> PathBuf {
    let base = base.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    base.join(format!("orderflow-bench-{}-{tag}-{nanos}", std::process::id()))
}

/// A random HS256 secret for the spawned service.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses anything but a loopback http URL: the bench never sends load to another machine.
pub fn check_loopback(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    if parsed.scheme() != "http" {
        bail!("--url must be http:// (got {})", parsed.scheme());
    }
    let host = parsed.host_str().unwrap_or("");
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    let loopback = ip.map_or(host.eq_ignore_ascii_case("localhost"), |ip| ip.is_loopback());
    if !loopback {
        bail!("--url must be a loopback address (127.0.0.0/8, ::1, localhost): the bench only loads this machine");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Where a loopback URL's requests go, and its `Host` (`host:port`).
pub fn socket_addr(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("`{url}` is not a URL"))?;
    let host = parsed.host_str().context("the URL has no host")?;
    let port = parsed.port_or_known_default().context("the URL has no port")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (bare, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .find(|a| a.ip().is_loopback())
        .with_context(|| format!("{host} is not a loopback address"))?;
    Ok((addr, format!("{host}:{port}")))
}

/// Resident set size now and at its peak (VmRSS, VmHWM), in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_memory(&status))
}

fn parse_memory(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") }
}

/// Clock ticks per second of `/proc` CPU times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU ticks a process (and its threads) has used.
pub fn process_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// User + system CPU ticks of a process's threads, summed by thread name (digits folded to `#`, so the
/// actix workers `actix-rt|system:0|arbiter:1` and `…:2` count as one group).
pub fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let group: String = comm.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
        *by.entry(group).or_default() += ticks(11) + ticks(12);
    }
    by
}

/// User + system CPU ticks of every process on the machine, by pid, with its name.
pub fn all_process_ticks() -> BTreeMap<u32, (String, u64)> {
    let mut all = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return all };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        all.insert(pid, (comm, ticks(11) + ticks(12)));
    }
    all
}

/// CPU ticks of the whole machine (all cores), from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// Interrupts and softirqs: on loopback, most of the TCP stack runs here, charged to no process.
    pub irq: u64,
    /// Time the hypervisor ran something else on our virtual CPUs.
    pub steal: u64,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = (0..8).map(at).sum();
    Some(MachineTicks { busy: total - at(3) - at(4), irq: at(5) + at(6), steal: at(7) })
}

/// One value of a Prometheus text exposition: the sum over every series of `name` whose labels contain
/// `label` (e.g. `projection="search"`; empty: all series).
pub fn metric(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if !labels.contains(label) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// What the machine is: for the report header.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_average: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        load_average: load_average(),
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_from_proc_status() {
        let status = "Name:\torderflow\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(parse_memory(status), Memory { rss_kib: 102_400, hwm_kib: 204_800 });
        assert!(memory(std::process::id()).is_some_and(|m| m.rss_kib > 0 && m.hwm_kib >= m.rss_kib));
    }

    #[test]
    fn picks_metrics_by_name_and_label() {
        let text = "# TYPE orderflow_projection_lag_seconds gauge\n\
                    orderflow_projection_lag_seconds{projection=\"search\"} 0.25\n\
                    orderflow_projection_lag_seconds{projection=\"revenue\"} 1.5\n\
                    orderflow_live_aggregates 42\n\
                    orderflow_live_aggregates_other 7\n";
        assert_eq!(metric(text, "orderflow_projection_lag_seconds", "projection=\"search\""), Some(0.25));
        assert_eq!(metric(text, "orderflow_projection_lag_seconds", ""), Some(1.75));
        assert_eq!(metric(text, "orderflow_live_aggregates", ""), Some(42.0));
        assert_eq!(metric(text, "orderflow_missing", ""), None);
    }

    #[test]
    fn only_loopback_urls() {
        assert_eq!(check_loopback("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert!(check_loopback("http://localhost:1").is_ok());
        assert!(check_loopback("http://[::1]:1").is_ok());
        assert!(check_loopback("http://10.0.0.1:8080").is_err());
        assert!(check_loopback("http://example.com").is_err());
        assert!(check_loopback("https://127.0.0.1").is_err());
    }

    #[test]
    fn loopback_socket_addresses() {
        let (addr, host) = socket_addr("http://127.0.0.1:8080").unwrap();
        assert_eq!((addr.to_string(), host.as_str()), ("127.0.0.1:8080".to_owned(), "127.0.0.1:8080"));
        assert!(socket_addr("http://localhost:1").unwrap().0.ip().is_loopback());
        assert_eq!(socket_addr("http://[::1]:2").unwrap().0.to_string(), "[::1]:2");
    }
}
