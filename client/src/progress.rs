//! Progress bars for long transfers: bytes done, rate and ETA on stderr, but
//! only when stderr is a terminal and the user did not ask for JSON. Every
//! other case gets a hidden bar, so transfer code never checks.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// How the bar looks: label, bar, bytes, rate, time left.
const TEMPLATE: &str =
    "{msg:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// A progress bar that may be hidden. Clones share one bar, so concurrent
/// transfers can add to the same total.
#[derive(Clone, Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of `total` bytes labelled `label`, shown only if `wanted` and
    /// stderr is a terminal.
    pub fn new(wanted: bool, total: u64, label: &str) -> Progress {
        if !wanted || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let style = ProgressStyle::with_template(TEMPLATE)
            .expect("invariant: the progress template is a valid constant")
            .progress_chars("=> ");
        let bar = ProgressBar::new(total)
            .with_style(style)
            .with_message(label.to_string());
        Progress(Some(bar))
    }

    /// A bar that never draws.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// Correct the total once it is known (downloads learn it from the header).
    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
        }
    }

    /// Count `bytes` more as done.
    pub fn add(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    /// Say what is being done now (a run's counts and current file).
    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }

    /// Remove the bar from the terminal, so the result line prints cleanly.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwanted_bar_is_hidden_and_harmless() {
        let progress = Progress::new(false, 10, "x");
        assert!(progress.0.is_none());
        progress.add(5);
        progress.set_total(20);
        progress.finish();
    }
}
