//! CPU time from `/proc`, in the kernel's USER_HZ ticks (1/100 s): what the benchmarks
//! report as the load of the machine and of the processes they measure; and the resident
//! memory of those processes.

/// Ticks per second of `/proc`'s CPU times.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The machine's busy time so far (`/proc/stat`: all but idle and iowait; steal included).
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let total = stat.lines().next().expect("the cpu line");
    total
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i))
        .map(|(_, ticks)| ticks.parse::<u64>().expect("ticks"))
        .sum()
}

/// User plus system time of process `pid` (`self` for this one), all threads.
pub fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read its stat");
    parse_stat(&stat).expect("a stat line").ticks
}

/// The processes whose parent is `parent`: each one's command name (`comm`) and
/// [`process_ticks`]. A control plane's components are its `kube cluster run`'s children.
pub fn children_ticks(parent: u32) -> Vec<(String, u64)> {
    children(parent)
        .into_iter()
        .map(|child| (child.comm, child.ticks))
        .collect()
}

/// The process id of `parent`'s child whose command name is `comm`, if it has one.
pub fn child_pid(parent: u32, comm: &str) -> Option<u32> {
    children(parent)
        .into_iter()
        .find(|child| child.comm == comm)
        .map(|child| child.pid)
}

struct Child {
    pid: u32,
    comm: String,
    ticks: u64,
}

fn children(parent: u32) -> Vec<Child> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = parent.to_string();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().into_string().ok()?.parse().ok()?;
            // A process can end between the listing and the read.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let stat = parse_stat(&stat)?;
            (stat.ppid == parent).then(|| Child {
                pid,
                comm: stat.comm.to_owned(),
                ticks: stat.ticks,
            })
        })
        .collect()
}

/// What the benchmarks read of a `/proc/<pid>/stat` line.
struct Stat<'a> {
    comm: &'a str,
    ppid: &'a str,
    /// utime + stime.
    ticks: u64,
}

fn parse_stat(stat: &str) -> Option<Stat<'_>> {
    // The command name is parenthesised and may itself hold spaces or parentheses; the
    // fields after it start at field 3 (state): ppid is field 4, utime and stime 14 and 15.
    let (head, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        comm: head.split_once('(')?.1,
        ppid: fields.get(1)?,
        ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    })
}

/// Resident memory of process `pid` now (`VmRSS` in `/proc/<pid>/status`), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status (is it running?): {e}"));
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// Processes that keep `count` cores busy until dropped: other work on the machine, at the
/// same priority as everything the benchmark measures.
pub struct Burners(Vec<std::process::Child>);

impl Burners {
    /// Starts `count` busy processes.
    pub fn start(count: usize) -> Self {
        let spin = |_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("start a busy shell")
        };
        Self((0..count).map(spin).collect())
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
