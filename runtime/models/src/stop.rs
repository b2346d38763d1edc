//! Stop sequences over streamed text.
//!
//! A stop string can arrive split across tokens (`"\n\nUser"` as `"\n"`, `"\nUs"`, `"er"`), so
//! text that could be the start of a stop string is held back until it either completes one
//! (generation stops; the stop string and anything after it are dropped) or cannot anymore (it
//! is released). The caller never sees any part of a stop string.

/// What became of the text pushed into a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopScan {
    /// This text is safe to emit (may be empty while a partial match is held back).
    Continue(String),
    /// A stop string completed: emit this text, then stop.
    Stopped(String),
}

/// Finds stop strings in a text stream, holding back possible partial matches.
#[derive(Debug)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (validated non-empty by `SamplingParams::validate`).
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Appends `text` (complete UTF-8) and reports what may be emitted.
    pub(crate) fn push(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Continue(text.to_string());
        }
        self.held.push_str(text);
        // The earliest complete match wins (over a longer one starting later).
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopScan::Stopped(out);
        }
        let keep = self.partial_match_len();
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        StopScan::Continue(out)
    }

    /// Releases held text when generation ends for another reason.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    /// Such a suffix starts at a char boundary: it begins with the first byte of a stop string,
    /// which is a UTF-8 leading byte.
    fn partial_match_len(&self) -> usize {
        let held = self.held.as_bytes();
        let mut best = 0;
        for stop in &self.stops {
            let stop = stop.as_bytes();
            let longest = (stop.len() - 1).min(held.len());
            for len in (best + 1..=longest).rev() {
                if held[held.len() - len..] == stop[..len] {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StopScan::{Continue, Stopped};

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn stop_split_across_pushes_is_never_emitted() {
        let mut m = matcher(&["\n\nUser:"]);
        assert_eq!(m.push("Hello"), Continue("Hello".into()));
        assert_eq!(m.push(" there\n"), Continue(" there".into()));
        assert_eq!(m.push("\nUs"), Continue("".into()));
        assert_eq!(m.push("er: hi"), Stopped("".into()));
    }

    #[test]
    fn false_partial_match_is_released() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("a ST"), Continue("a ".into()));
        assert_eq!(m.push("OP"), Stopped("".into()));
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("a ST"), Continue("a ".into()));
        assert_eq!(m.push("ONE S"), Continue("STONE ".into()));
        assert_eq!(m.finish(), "S");
    }

    #[test]
    fn earliest_stop_wins_and_text_before_it_is_kept() {
        let mut m = matcher(&["world", "lo w"]);
        assert_eq!(m.push("hello world"), Stopped("hel".into()));
    }

    #[test]
    fn multibyte_text_and_stops() {
        let mut m = matcher(&["€€"]);
        assert_eq!(m.push("é€"), Continue("é".into()));
        assert_eq!(m.push("x"), Continue("€x".into()));
        assert_eq!(m.push("€"), Continue("".into()));
        assert_eq!(m.push("€ after"), Stopped("".into()));
    }

    #[test]
    fn no_stops_passes_everything() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc"), Continue("abc".into()));
        assert_eq!(m.finish(), "");
    }
}
