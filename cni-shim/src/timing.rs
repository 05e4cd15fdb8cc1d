//! Phase timing of an ADD or DEL, for finding where a pod attach spends its time.
//!
//! Off unless the plugin's environment has `SWITCHYARD_CNI_TIMING=1` (a runtime passes the
//! plugin only the `CNI_*` variables, so it is for benchmarks and debugging by hand): then
//! one line goes to stderr when the command ends, e.g.
//!
//! ```text
//! switchyard-cni timing: ADD default/web-0 ok total_ms=12.41 parse=0.05 netns=0.02 ...
//! ```
//!
//! Each field is the milliseconds since the previous mark; `total_ms` is from the start of
//! [`crate::plugin::execute`] to the end of the command (the process's exec and exit are
//! not in it: a caller measuring spawn to exit sees them as the difference).

use std::time::{Duration, Instant};

/// The environment variable that turns the timing line on.
pub const TIMING_ENV: &str = "SWITCHYARD_CNI_TIMING";

/// Marks of one command, in order.
#[derive(Debug)]
pub struct Phases {
    on: bool,
    started: Instant,
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl Phases {
    /// Starts timing now; `on` decides whether [`Phases::report`] prints anything.
    pub fn new(on: bool) -> Phases {
        let now = Instant::now();
        Phases {
            on,
            started: now,
            last: now,
            marks: Vec::new(),
        }
    }

    /// Whether the line will be printed.
    pub fn on(&self) -> bool {
        self.on
    }

    /// Ends phase `name` now.
    pub fn mark(&mut self, name: &'static str) {
        if self.on {
            let now = Instant::now();
            self.marks.push((name, now - self.last));
            self.last = now;
        }
    }

    /// Records a part `name` of the phase in progress (measured by the caller), without
    /// ending it.
    pub fn part(&mut self, name: &'static str, took: Duration) {
        if self.on {
            self.marks.push((name, took));
        }
    }

    /// The line [`Phases::report`] prints.
    pub fn line(&self, command: &str, who: &str, ok: bool) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut out = format!(
            "switchyard-cni timing: {command} {who} {} total_ms={:.2}",
            if ok { "ok" } else { "failed" },
            ms(self.last.max(Instant::now()) - self.started)
        );
        for (name, took) in &self.marks {
            out.push_str(&format!(" {name}={:.2}", ms(*took)));
        }
        out
    }

    /// Prints the line on stderr when timing is on.
    pub fn report(&self, command: &str, who: &str, ok: bool) {
        if self.on {
            eprintln!("{}", self.line(command, who, ok));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_records_nothing_and_on_names_every_phase() {
        let mut off = Phases::new(false);
        off.mark("netns");
        assert!(off.marks.is_empty());
        let mut on = Phases::new(true);
        on.mark("netns");
        on.part("ethtool", Duration::from_micros(1500));
        on.mark("host_end");
        let line = on.line("ADD", "default/web-0", true);
        assert!(
            line.starts_with("switchyard-cni timing: ADD default/web-0 ok total_ms="),
            "{line}"
        );
        for field in [" netns=", " ethtool=1.50", " host_end="] {
            assert!(line.contains(field), "{line}");
        }
    }
}
