//! The ramdisk's boot timeline: PID 1 and the agent each append a line per
//! milestone (`<seconds since boot> <event>`) to one file under /run, and
//! the agent prints the whole story once its first heartbeat is through.
//! The kernel's own share is the uptime at which `/init` started.
//!
//! Only a ramdisk has the file: PID 1 creates it, and [`mark`] never
//! creates it, so an agent run on a host (the tests) writes nothing.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Where the marks go; /run is PID 1's tmpfs.
pub const PATH: &str = "/run/ferrite/timeline";
/// A timeline is a few dozen lines; never read more than this.
const MAX_BYTES: u64 = 64 * 1024;

/// Time since the kernel started (what /proc/uptime counts).
pub fn since_boot() -> Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// PID 1: start the timeline with `/init`'s own start.
pub fn begin(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, line(since_boot(), "/init"));
}

/// Append a milestone to the ramdisk's timeline (a no-op off the ramdisk).
pub fn mark(event: &str) {
    mark_at(Path::new(PATH), event);
}

pub fn mark_at(path: &Path, event: &str) {
    // O_APPEND without O_CREAT: one short write per line, so PID 1 and the
    // agent never interleave within a line.
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = f.write_all(line(since_boot(), event).as_bytes());
    }
}

fn line(at: Duration, event: &str) -> String {
    // One line per mark, whatever the caller passed.
    let event: String = event.chars().filter(|c| *c != '\n').collect();
    format!("{:.3} {event}\n", at.as_secs_f64())
}

/// A parsed mark.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at: Duration,
    pub event: String,
}

pub fn parse(text: &str) -> Vec<Mark> {
    text.lines()
        .filter_map(|l| {
            let (at, event) = l.split_once(' ')?;
            let secs: f64 = at.parse().ok()?;
            Some(Mark {
                at: Duration::try_from_secs_f64(secs).ok()?,
                event: event.to_string(),
            })
        })
        .collect()
}

/// The timeline as one log line: the kernel's share, then each milestone
/// as the time since the previous one, then the total from `/init`.
pub fn render(marks: &[Mark]) -> Option<String> {
    let start = marks.iter().find(|m| m.event == "/init")?;
    let mut out = format!("kernel → /init {:.3} s", start.at.as_secs_f64());
    let mut prev = start.at;
    for m in marks
        .iter()
        .filter(|m| m.at >= start.at && m.event != "/init")
    {
        let _ = write!(
            out,
            " | {} +{:.3}",
            m.event,
            m.at.saturating_sub(prev).as_secs_f64()
        );
        prev = m.at;
    }
    let last = marks.last()?;
    let _ = write!(
        out,
        " | /init → {} {:.3} s",
        last.event,
        last.at.saturating_sub(start.at).as_secs_f64()
    );
    Some(out)
}

/// Read the ramdisk's timeline and render it, if there is one.
pub fn report() -> Option<String> {
    report_at(Path::new(PATH))
}

pub fn report_at(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    render(&parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_append_and_render_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/timeline");
        // No timeline file yet: marking is a no-op (an agent on a host).
        mark_at(&path, "ignored");
        assert!(!path.exists());
        begin(&path);
        mark_at(&path, "drivers");
        mark_at(&path, "first heartbeat");
        let text = std::fs::read_to_string(&path).unwrap();
        let marks = parse(&text);
        let events: Vec<&str> = marks.iter().map(|m| m.event.as_str()).collect();
        assert_eq!(events, ["/init", "drivers", "first heartbeat"]);
        assert!(marks.windows(2).all(|w| w[0].at <= w[1].at));
        let line = report_at(&path).unwrap();
        assert!(line.starts_with("kernel → /init "), "{line}");
        assert!(line.contains(" | drivers +"), "{line}");
        assert!(line.contains(" | /init → first heartbeat "), "{line}");
    }

    #[test]
    fn render_reports_steps_and_total() {
        let marks = parse(
            "2.500 /init\n2.600 drivers\nbad line\n3.100 address eth0\n3.400 first heartbeat\n",
        );
        assert_eq!(
            render(&marks).unwrap(),
            "kernel → /init 2.500 s | drivers +0.100 | address eth0 +0.500 \
             | first heartbeat +0.300 | /init → first heartbeat 0.900 s"
        );
        // No /init mark: nothing to say.
        assert_eq!(render(&parse("1.0 drivers\n")), None);
    }

    #[test]
    fn events_stay_on_one_line() {
        assert_eq!(line(Duration::from_millis(1500), "a\nb"), "1.500 ab\n");
    }
}
