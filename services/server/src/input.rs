//! Input rules at the edge: the text and times a client may send, checked once, when the
//! request is parsed, before anything reaches a handler's logic, the matcher or Postgres.
//!
//! - **Text** ([`Text`], [`TextBlock`] in request types; [`check_text`] for payloads whose
//!   types live in `capex-core`): no control characters (Unicode `Cc`: U+0000 to U+001F and
//!   U+007F to U+009F), at most a named number of characters. Postgres cannot store NUL in
//!   `text` or `\u0000` in `jsonb`, and one such string in a matcher batch used to fail every
//!   order in it; the other control characters have no business in a name, an email or a memo.
//!   A [`TextBlock`] (job arguments, environment values) may also hold tabs and line breaks.
//!   Refusals are 422 `invalid_text` or `text_too_long`, naming the field.
//! - **Job output** ([`OutputText`]): what a job printed is the job's, not a client's, so
//!   control characters (ANSI colours, tabs, carriage returns) are kept and only NUL, which
//!   Postgres cannot store, becomes U+FFFD, the Unicode replacement character, marking where
//!   something was lost. Refusing would drop the rest of the upload for a byte the agent
//!   cannot change.
//! - **Times** ([`Time`] in request types; [`check_time`] elsewhere): RFC 3339 years 0001 to
//!   9999. Postgres stores 4713 BC to 294276 AD, so every accepted time is storable, and
//!   nothing a person means lies outside it. Refusals are 422 `invalid_time`.
//! - **Query strings and paths** ([`refuse_control_text_in_uri`], a layer on every API
//!   route): no decoded parameter name, value or path segment may hold a control character.

use std::borrow::Cow;
use std::fmt;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ApiError;

/// The characters a text field may hold besides printable ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line: no control character at all.
    Line,
    /// Several lines: tab, line feed and carriage return, but no other control character.
    Block,
}

/// Why a text was refused. The messages start with stable words: serde keeps only the
/// message of a custom error, and [`TextError::code_of`] reads the code back from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// A control character (its code point) at this character position.
    Control {
        code_point: u32,
        position: usize,
    },
    TooLong {
        chars_max: usize,
    },
}

const CONTROL_MESSAGE: &str = "text holds a control character";
const TOO_LONG_MESSAGE: &str = "text is longer than";

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Control { code_point, position } => {
                write!(f, "{CONTROL_MESSAGE} (U+{code_point:04X} at character {position})")
            }
            TextError::TooLong { chars_max } => write!(f, "{TOO_LONG_MESSAGE} {chars_max} characters"),
        }
    }
}

impl TextError {
    pub fn code(&self) -> &'static str {
        match self {
            TextError::Control { .. } => "invalid_text",
            TextError::TooLong { .. } => "text_too_long",
        }
    }

    /// The code of a text error from its message (see the type's doc).
    pub fn code_of(message: &str) -> Option<&'static str> {
        if message.starts_with(CONTROL_MESSAGE) {
            Some("invalid_text")
        } else if message.starts_with(TOO_LONG_MESSAGE) {
            Some("text_too_long")
        } else {
            None
        }
    }
}

/// Checks `text` against the rules of `kind` and at most `chars_max` characters.
pub fn text_rules(text: &str, kind: TextKind, chars_max: usize) -> Result<(), TextError> {
    let allowed = |c: char| kind == TextKind::Block && matches!(c, '\t' | '\n' | '\r');
    if let Some((position, c)) = text.chars().enumerate().find(|&(_, c)| c.is_control() && !allowed(c)) {
        return Err(TextError::Control { code_point: c as u32, position });
    }
    // Counting stops one past the bound: a long text costs no more than a short one.
    if text.chars().take(chars_max + 1).count() > chars_max {
        return Err(TextError::TooLong { chars_max });
    }
    Ok(())
}

/// [`text_rules`] for a field whose type is not ours (a signed payload's): a 422 naming it.
pub fn check_text(field: &str, text: &str, kind: TextKind, chars_max: usize) -> Result<(), ApiError> {
    text_rules(text, kind, chars_max).map_err(|err| ApiError::invalid(field, err.code(), format!("{field}: {err}")))
}

/// One line of text from a client: no control characters, at most `CHARS_MAX` characters.
/// Serialized as the plain string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Text<const CHARS_MAX: usize>(String);

/// Text of several lines from a client (tabs and line breaks allowed, no other control
/// character), at most `CHARS_MAX` characters. Serialized as the plain string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TextBlock<const CHARS_MAX: usize>(String);

macro_rules! text_type {
    ($name:ident, $kind:expr) => {
        impl<const CHARS_MAX: usize> $name<CHARS_MAX> {
            pub fn parse(text: String) -> Result<Self, TextError> {
                text_rules(&text, $kind, CHARS_MAX)?;
                Ok($name(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl<const CHARS_MAX: usize> std::ops::Deref for $name<CHARS_MAX> {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl<const CHARS_MAX: usize> Default for $name<CHARS_MAX> {
            fn default() -> Self {
                $name(String::new())
            }
        }

        impl<'de, const CHARS_MAX: usize> Deserialize<'de> for $name<CHARS_MAX> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::parse(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_type!(Text, TextKind::Line);
text_type!(TextBlock, TextKind::Block);

/// What a job printed, as its host uploads it: kept as it is, except that NUL (which
/// Postgres cannot store) becomes U+FFFD. Its length is bounded by the upload's body limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputText(String);

impl OutputText {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// `text` with every NUL replaced by U+FFFD (borrowed when it has none).
pub fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') { Cow::Owned(text.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(text) }
}

impl<'de> Deserialize<'de> for OutputText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(OutputText(without_nul(&text).into_owned()))
    }
}

/// Earliest time a client may send: 0001-01-01T00:00:00Z.
pub fn time_min() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc()).unwrap_or_default()
}

/// Latest time a client may send: 9999-12-31T23:59:59.999999Z (Postgres keeps microseconds).
pub fn time_max() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map(|t| t.and_utc())
        .unwrap_or_default()
}

const TIME_RANGE_MESSAGE: &str = "time is out of range";

/// Why a time was refused (its message starts with stable words, as [`TextError`]'s do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOutOfRange;

impl fmt::Display for TimeOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TIME_RANGE_MESSAGE}: a time is between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z")
    }
}

impl TimeOutOfRange {
    pub const CODE: &'static str = "invalid_time";

    /// The code of a time error from its message.
    pub fn code_of(message: &str) -> Option<&'static str> {
        message.starts_with(TIME_RANGE_MESSAGE).then_some(Self::CODE)
    }
}

/// The time if it is one a client may send.
pub fn time_rules(time: DateTime<Utc>) -> Result<DateTime<Utc>, TimeOutOfRange> {
    if (time_min()..=time_max()).contains(&time) { Ok(time) } else { Err(TimeOutOfRange) }
}

/// [`time_rules`] for a time that is not parsed as a [`Time`] (a query's): a 422 naming it.
pub fn check_time(field: &str, time: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    time_rules(time).map_err(|err| ApiError::invalid(field, TimeOutOfRange::CODE, format!("{field}: {err}")))
}

/// A time from a client (RFC 3339), within [`time_min`] to [`time_max`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Time(DateTime<Utc>);

impl Time {
    pub fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let time = DateTime::<Utc>::deserialize(deserializer)?;
        time_rules(time).map(Time).map_err(serde::de::Error::custom)
    }
}

/// `text` with its control characters escaped (`\u{0}`), fit to name a field in a problem.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
    )
}

/// Layer on every API route: refuses a request whose query string (names or values) or
/// path holds a control character once percent-decoded, so handlers never see one,
/// whatever they bind it to. The answers follow the API's rules for query and path errors
/// (see `params`): a query parameter with one is 400 `invalid_text` naming the parameter;
/// a path with one names nothing, 404 `not_found` (field `path`), like any malformed id.
pub async fn refuse_control_text_in_uri(request: Request, next: Next) -> Response {
    if let Some(err) = uri_text_error(request.uri()) {
        return err.into_response();
    }
    next.run(request).await
}

fn uri_text_error(uri: &axum::http::Uri) -> Option<ApiError> {
    let has_control = |text: &str| text.chars().any(char::is_control);
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    if has_control(&path) {
        return Some(
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "nothing is at a path that holds a control character")
                .with_field("path"),
        );
    }
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(name, value)| has_control(name) || has_control(value)).map(
        |(name, _)| {
            let field = printable(&name).into_owned();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_text",
                format!("query parameter {field} holds a control character"),
            )
            .with_field(field)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_every_control_character() {
        for c in ['\0', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'] {
            let err = text_rules(&format!("ab{c}"), TextKind::Line, 10).unwrap_err();
            assert_eq!(err, TextError::Control { code_point: c as u32, position: 2 });
            assert_eq!(TextError::code_of(&err.to_string()), Some("invalid_text"));
        }
        assert!(text_rules("ünïcødé ✓ spaces", TextKind::Line, 100).is_ok());
    }

    #[test]
    fn blocks_allow_tabs_and_line_breaks_only() {
        assert!(text_rules("a\tb\r\nc", TextKind::Block, 10).is_ok());
        for c in ['\0', '\u{1b}', '\u{7}', '\u{7f}'] {
            assert_eq!(text_rules(&format!("{c}"), TextKind::Block, 10).unwrap_err().code(), "invalid_text");
        }
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert!(text_rules("ééé", TextKind::Line, 3).is_ok());
        let err = text_rules("éééé", TextKind::Line, 3).unwrap_err();
        assert_eq!(err, TextError::TooLong { chars_max: 3 });
        assert_eq!(TextError::code_of(&err.to_string()), Some("text_too_long"));
    }

    #[test]
    fn output_text_keeps_controls_and_replaces_nul() {
        let text: OutputText = serde_json::from_str(r#""\u001b[31mred\u0000\tend\n""#).unwrap();
        assert_eq!(text.as_str(), "\u{1b}[31mred\u{FFFD}\tend\n");
    }

    #[test]
    fn times_outside_rfc3339_years_are_refused() {
        for ok in ["0001-01-01T00:00:00Z", "2026-12-02T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
            assert!(serde_json::from_str::<Time>(&format!("\"{ok}\"")).is_ok(), "{ok}");
        }
        for bad in ["-5000-01-01T00:00:00Z", "0000-12-31T23:59:59Z", "+10000-01-01T00:00:00Z"] {
            let Ok(time) = bad.parse::<DateTime<Utc>>() else { continue };
            let err = time_rules(time).unwrap_err();
            assert_eq!(TimeOutOfRange::code_of(&err.to_string()), Some("invalid_time"), "{bad}");
        }
    }

    #[test]
    fn uris_with_control_characters_are_refused() {
        let field = |uri: &str| uri_text_error(&uri.parse().unwrap()).map(|e| e.field.unwrap_or_default());
        assert_eq!(field("/api/v1/jobs?state=%00"), Some("state".into()));
        assert_eq!(field("/api/v1/jobs?limit=5&cursor=a%0Ab"), Some("cursor".into()));
        assert_eq!(field("/api/v1/markets/H100%00/book"), Some("path".into()));
        assert_eq!(field("/api/v1/jobs?state=running&x=caf%C3%A9"), None);
        assert_eq!(field("/api/v1/jobs"), None);
        assert_eq!(field("/api/v1/jobs?st%00ate=1"), Some("st\\u{0}ate".into()));
    }
}
