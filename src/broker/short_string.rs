//! AMQP short strings that were not UTF-8 on the wire: how the vendored
//! parser carries their exact bytes, and how the tools show them.

/// The first of the 256 chars (U+10FF00..=U+10FFFF) that stand for one raw
/// byte of an AMQP short string. A short string (header name, `message_id`,
/// `type`, …) is bytes on the wire; the vendored parser
/// (patches/amq-protocol-types) keeps each byte that is not part of valid
/// UTF-8 as `U+10FF00 + byte`, and lapin writes it back as that byte, so a
/// copy carries the exact bytes.
const ESCAPE_BASE: u32 = 0x10FF00;

/// The raw byte `c` stands for in a parsed short string, if any.
fn escaped_byte(c: char) -> Option<u8> {
    (c as u32).checked_sub(ESCAPE_BASE).map(|b| b as u8)
}

/// Whether the short string `s` was not UTF-8 on the wire (it holds escaped
/// bytes).
pub fn short_string_is_raw(s: &str) -> bool {
    s.chars().any(|c| escaped_byte(c).is_some())
}

/// The bytes of the parsed short string `s` on the wire.
pub fn short_string_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match escaped_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// The parsed short string `s` as readable text: itself when it was UTF-8,
/// otherwise its wire bytes with each byte that is not part of valid UTF-8
/// shown as `\xHH` (readable, not reversible on its own: a backslash is not
/// escaped; [`short_string_hex`] gives the exact bytes).
pub fn short_string_display(s: &str) -> std::borrow::Cow<'_, str> {
    if !short_string_is_raw(s) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for chunk in short_string_bytes(s).utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The wire bytes of the parsed short string `s` in lowercase hex, when it was
/// not UTF-8 on the wire.
pub fn short_string_hex(s: &str) -> Option<String> {
    short_string_is_raw(s).then(|| {
        short_string_bytes(s)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_that_were_not_utf8_are_shown_readably_and_exactly() {
        // What the vendored parser makes of b"id-\xff\xc3(\\".
        let parsed = "id-\u{10FFFF}\u{10FFC3}(\\";
        assert!(short_string_is_raw(parsed));
        assert_eq!(short_string_bytes(parsed), b"id-\xff\xc3(\\");
        assert_eq!(short_string_display(parsed), "id-\\xFF\\xC3(\\");
        assert_eq!(short_string_hex(parsed).as_deref(), Some("69642dffc3285c"));
        // A valid char in the escape range arrives escaped byte by byte.
        let literal = "\u{10FFF4}\u{10FF8F}\u{10FFBD}\u{10FF81}";
        assert_eq!(short_string_display(literal), "\u{10FF41}");
        // UTF-8 (U+FFFD included) is shown as it is, without hex.
        assert!(!short_string_is_raw("é\u{FFFD}"));
        assert_eq!(short_string_display("é\u{FFFD}"), "é\u{FFFD}");
        assert_eq!(short_string_hex("é"), None);
    }
}
