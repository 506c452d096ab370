//! Log-line values written on the stack: the outcome line of every message
//! carries the per-target latencies, and formatting them must not allocate
//! per message.

use std::fmt;

/// A value's `Display` output, written into a buffer on the stack (on the
/// heap only when it is longer), to be logged as a string field without an
/// allocation per message.
// The large variant is the point: it lives on the stack for one log line.
#[allow(clippy::large_enum_variant)]
pub(super) enum InlineStr {
    Stack { buf: [u8; INLINE_STR], len: usize },
    Heap(String),
}

/// Enough for the latencies of a dozen targets with short names.
const INLINE_STR: usize = 256;

/// Writes into a stack buffer; fails, without writing, at the first piece
/// that does not fit.
struct StackWriter<'a> {
    buf: &'a mut [u8; INLINE_STR],
    len: usize,
}

impl fmt::Write for StackWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl InlineStr {
    pub(super) fn display(value: &impl fmt::Display) -> InlineStr {
        let mut buf = [0u8; INLINE_STR];
        let mut w = StackWriter {
            buf: &mut buf,
            len: 0,
        };
        match fmt::write(&mut w, format_args!("{value}")) {
            Ok(()) => {
                let len = w.len;
                InlineStr::Stack { buf, len }
            }
            Err(_) => InlineStr::Heap(value.to_string()),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            // Only whole `&str`s were copied in, so this is UTF-8.
            InlineStr::Stack { buf, len } => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            InlineStr::Heap(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_stay_on_the_stack_and_long_ones_still_print_whole() {
        let short = InlineStr::display(&"user-management=12.3 logging=done");
        assert!(matches!(short, InlineStr::Stack { .. }));
        assert_eq!(short.as_str(), "user-management=12.3 logging=done");
        let long = "é".repeat(INLINE_STR);
        let heap = InlineStr::display(&long);
        assert!(matches!(heap, InlineStr::Heap(_)));
        assert_eq!(heap.as_str(), long);
    }
}
