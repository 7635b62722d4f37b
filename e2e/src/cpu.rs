//! CPU time from `/proc`, in the kernel's USER_HZ ticks (1/100 s): what the benchmarks
//! report as the load of the machine and of the processes they measure.

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
    // Fields after the parenthesised command name start at field 3; utime and stime are 14
    // and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}
