//! W3C Trace Context (`traceparent`, <https://www.w3.org/TR/trace-context/>) carried with a command from the
//! HTTP request through the append (stored with each event) and the bridge (a Kafka header) to the projection
//! that applies it, so one trace id ties together the log lines of the whole path. Spans are `tracing` spans
//! with a `trace_id` field; JSON logs (`log.format = "json"`) carry it on every line.

use std::fmt;

/// A parsed `traceparent`: version 00, a trace id, the id of the span that is the parent, and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A new trace (a request that came without one).
    pub fn root() -> Self {
        let trace_id = loop {
            let id: u128 = rand::random();
            if id != 0 {
                break id;
            }
        };
        Self { trace_id, span_id: new_span_id(), flags: 1 }
    }

    /// The same trace, a new span: what this service hands on as the parent of the next hop.
    pub fn child(&self) -> Self {
        Self { span_id: new_span_id(), ..*self }
    }

    /// Parses a `traceparent` header value; `None` for anything the spec says to ignore (then a new trace
    /// starts). Versions above 00 are read as 00, as the spec asks, if their first four fields are well-formed.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|id| *id != 0)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id, span_id, flags })
    }

    /// The trace id as 32 lowercase hex digits (the `trace_id` field of spans).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// The header value: `00-<trace id>-<span id>-<flags>`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// The trace id of a stored `traceparent`, for a span field (empty when there is none or it is unreadable).
pub fn trace_id_of(traceparent: Option<&str>) -> String {
    traceparent.and_then(TraceParent::parse).map(|t| t.trace_id()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_spec_example() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(value).expect("valid");
        assert_eq!(parsed.to_string(), value);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = parsed.child();
        assert_eq!(child.trace_id(), parsed.trace_id());
        assert_ne!(child.span_id(), parsed.span_id());
    }

    #[test]
    fn refuses_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1g",
            "💥",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version with extra fields is read as version 00.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").is_some());
    }

    #[test]
    fn roots_are_valid_and_distinct() {
        let (a, b) = (TraceParent::root(), TraceParent::root());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
    }
}
