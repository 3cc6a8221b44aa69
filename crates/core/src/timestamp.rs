//! The calendar: timestamp parsing and formatting, and the civil date of an instant.
//!
//! This is the crate's one calendar: the flattener parses every timestamp cell with
//! [`parse_timestamp_micros`], the tables print them with [`write_timestamp`], and the
//! generator spells its synthetic times with `Civil`. Zephr writes user times as ISO-8601 with `Z` and grant times as `YYYY-MM-DD HH:MM:SS`
//! without a zone; exports from other tools carry offsets and fractions. Every one of them
//! becomes microseconds since the Unix epoch in UTC, which is what Parquet stores and what the
//! CSV prints back. A hand-written parser is used because it is exact (no float arithmetic)
//! and several times faster than a general date library on this hot path.

/// 0000-01-01T00:00:00Z, the first instant a four-digit year can show.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
/// 9999-12-31T23:59:59.999999Z, the last.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Parses an ISO-8601-like timestamp into microseconds since the epoch, UTC.
///
/// Accepted: `YYYY-MM-DD`, or `YYYY-MM-DD[T| ]HH:MM:SS[.f{1,9}][Z|±HH:MM|±HHMM|±HH]`.
/// No zone means UTC. Digits past the sixth fractional digit are truncated.
/// Returns `None` for anything else, including impossible dates such as February 30.
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 10 {
        return None;
    }
    let year = digits(b, 0, 4)? as i64;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !(1..=12).contains(&month) {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let hour = digits(b, 11, 2)? as i64;
    let minute = digits(b, 14, 2)? as i64;
    let second = digits(b, 17, 2)? as i64;
    // No leap seconds: Unix time has none, so a :60 could only be stored by moving it.
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut pos = 19;
    let mut micros = 0i64;
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 6 {
                micros = micros * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let count = pos - start;
        if count == 0 || count > 9 {
            return None;
        }
        for _ in count..6 {
            micros *= 10;
        }
    }
    let offset_seconds = parse_zone(&b[pos..])?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let micros = seconds.checked_mul(1_000_000)?.checked_add(micros)?;
    // An offset can push a time across year 0 or 9999; ISO-8601 text (and many readers)
    // cannot represent that, so it is not a timestamp this tool can keep exactly.
    (MIN_MICROS..=MAX_MICROS)
        .contains(&micros)
        .then_some(micros)
}

/// Parses the zone suffix: empty or `Z` is UTC, else `±HH[:MM]` or `±HHMM`, in seconds east.
fn parse_zone(b: &[u8]) -> Option<i64> {
    match b {
        [] | [b'Z'] | [b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hours, minutes) = match rest.len() {
                2 => (digits(rest, 0, 2)?, 0),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return None,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => None,
    }
}

fn digits(b: &[u8], at: usize, count: usize) -> Option<u32> {
    let slice = b.get(at..at + count)?;
    let mut value = 0u32;
    for &d in slice {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(d - b'0');
    }
    Some(value)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A UTC date and time of day, to the second, in the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    /// The date and time of `seconds` since the Unix epoch (negative before 1970).
    pub(crate) fn from_unix_seconds(seconds: i64) -> Civil {
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let of_day = seconds.rem_euclid(86_400) as u32;
        Civil {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    #[cfg(test)]
    /// Seconds since the Unix epoch.
    pub(crate) fn unix_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends the CSV text of a UTC timestamp: `YYYY-MM-DDTHH:MM:SS[.mmm|.uuuuuu]Z`.
///
/// Whole seconds print no fraction, whole milliseconds print three digits, anything finer six,
/// so Zephr's millisecond times read back exactly as they were written.
///
/// Every timestamp cell of the CSV passes through here, so the text is written in place: a
/// fixed-size template is appended (a constant-length copy, inlined), its digits are filled
/// by index and the unused end is cut. Pushing the text piece by piece cost about 370
/// instructions a cell (callgrind); building it in a stack buffer and appending that stalled
/// the copy on the stores just made (perf: as much time in that 27-byte memcpy as in the rest).
pub fn write_timestamp(out: &mut Vec<u8>, micros: i64) {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000) as u32;
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let start = out.len();
    out.extend_from_slice(b"0000-00-00T00:00:00.000000Z");
    let text = &mut out[start..];
    text[5..7].copy_from_slice(&two_digits(month));
    text[8..10].copy_from_slice(&two_digits(day));
    text[11..13].copy_from_slice(&two_digits(secs_of_day / 3600));
    text[14..16].copy_from_slice(&two_digits(secs_of_day / 60 % 60));
    text[17..19].copy_from_slice(&two_digits(secs_of_day % 60));
    let end = text_end(fraction);
    if fraction != 0 {
        let mut digits = if end == 24 { fraction / 1000 } else { fraction };
        for slot in text[20..end - 1].iter_mut().rev() {
            *slot = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
    }
    text[end - 1] = b'Z';
    if (0..=9999).contains(&year) {
        let year = year as u32;
        text[0..2].copy_from_slice(&two_digits(year / 100));
        text[2..4].copy_from_slice(&two_digits(year % 100));
        out.truncate(start + end);
    } else {
        // Parsing never makes such a year; this only keeps a caller's own number whole.
        let rest = text[4..end].to_vec();
        out.truncate(start);
        out.extend_from_slice(year.to_string().as_bytes());
        out.extend_from_slice(&rest);
    }
}

/// Where the text of [`write_timestamp`] ends (one past its `Z`) for a given fraction.
fn text_end(fraction: u32) -> usize {
    if fraction == 0 {
        20
    } else if fraction.is_multiple_of(1000) {
        24
    } else {
        27
    }
}

/// `value` (below 100) as two ASCII digits.
fn two_digits(value: u32) -> [u8; 2] {
    [b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970): the one reading of
/// the clock for request signatures, lock leases and Delta commit times.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `time` as ISO-8601 UTC, whole seconds rounded down (`2024-05-01T12:00:00Z`): rounding
/// down can only make the next `since` earlier, never skip an update.
pub fn iso_utc(time: std::time::SystemTime) -> String {
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| {
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1_000_000)
    });
    let mut out = Vec::new();
    write_timestamp(&mut out, seconds.saturating_mul(1_000_000));
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_utc_formats_whole_seconds_rounded_down() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_millis(1_445_412_480_999);
        assert_eq!(iso_utc(t), "2015-10-21T07:28:00Z");
        assert_eq!(iso_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    fn round_trip(text: &str) -> String {
        let mut out = Vec::new();
        write_timestamp(&mut out, parse_timestamp_micros(text).expect(text));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(parse_timestamp_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp_micros("1970-01-01"), Some(0));
        assert_eq!(
            parse_timestamp_micros("1970-01-01 00:00:01"),
            Some(1_000_000)
        );
        assert_eq!(round_trip("2021-02-24T15:43:28Z"), "2021-02-24T15:43:28Z");
        assert_eq!(round_trip("2022-06-01 00:00:00"), "2022-06-01T00:00:00Z");
        assert_eq!(
            round_trip("2021-02-24T16:43:28.5+01:00"),
            "2021-02-24T15:43:28.500Z"
        );
        assert_eq!(
            round_trip("2021-02-24T10:43:28-0500"),
            "2021-02-24T15:43:28Z"
        );
        assert_eq!(
            round_trip("2021-02-24t15:43:28.123456789z"),
            "2021-02-24T15:43:28.123456Z"
        );
        assert_eq!(
            round_trip("2021-02-24T15:43:28.000001Z"),
            "2021-02-24T15:43:28.000001Z"
        );
        assert_eq!(
            round_trip("2024-02-29T23:59:59.999+00"),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            round_trip("1969-12-31T23:59:59.5Z"),
            "1969-12-31T23:59:59.500Z"
        );
        assert_eq!(
            round_trip("2000-03-01 00:30:00+01:00"),
            "2000-02-29T23:30:00Z"
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            "",
            "2021",
            "2021-02-30",
            "2023-02-29",
            "2021-13-01",
            "2021-02-24T25:00:00Z",
            "2021-02-24T15:43Z",
            "2021-02-24T15:43:28.Z",
            "2021-02-24T15:43:28+1",
            "yesterday",
            "2021-02-24T15:43:28Zjunk",
            "2021-12-31T23:59:60Z",
            "9999-12-31T23:59:59-14:00",
            "0000-01-01T00:00:00+14:00",
            "2021-02-24T15:43:28.1234567890Z",
            "२०२१-02-24",
        ] {
            assert_eq!(parse_timestamp_micros(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_range_ends_are_exact() {
        assert_eq!(
            parse_timestamp_micros("0000-01-01T00:00:00Z"),
            Some(MIN_MICROS)
        );
        assert_eq!(
            parse_timestamp_micros("9999-12-31T23:59:59.999999Z"),
            Some(MAX_MICROS)
        );
        let mut out = Vec::new();
        write_timestamp(&mut out, MAX_MICROS);
        assert_eq!(out, b"9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn civil_conversion_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = Civil::from_unix_seconds(1_614_181_408);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2021, 2, 24, 15, 43, 28)
        );
        assert_eq!(t.unix_seconds(), 1_614_181_408);
        assert_eq!(Civil::from_unix_seconds(-1).unix_seconds(), -1);
    }

    /// Arrow's calendar (chrono's, through `temporal_conversions`): an implementation this
    /// module shares nothing with.
    fn library_text(micros: i64) -> String {
        arrow_array::temporal_conversions::timestamp_us_to_datetime(micros)
            .expect("in chrono's range")
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string()
    }

    proptest::proptest! {
        /// Parsing and civil dates agree with an independent calendar over the whole range,
        /// in the shapes Zephr writes and with offsets.
        #[test]
        fn agrees_with_an_independent_calendar(
            micros in MIN_MICROS + 86_400_000_000..=MAX_MICROS - 86_400_000_000,
            shape in 0u8..4,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59i64),
        ) {
            let full = library_text(micros);
            let (date, time) = (&full[..10], &full[11..19]);
            let fraction = &full[19..];
            let (text, expected) = match shape {
                // Zephr's user times, and its zone-less grant times.
                0 => (format!("{date}T{time}Z"), micros - micros.rem_euclid(1_000_000)),
                1 => (format!("{date} {time}{fraction}"), micros),
                2 => (date.to_string(), micros - micros.rem_euclid(86_400_000_000)),
                // The same instant written in another zone.
                _ => {
                    let local = library_text(micros + offset_minutes * 60_000_000);
                    let sign = if offset_minutes < 0 { '-' } else { '+' };
                    let m = offset_minutes.abs();
                    (format!("{}{sign}{:02}:{:02}", local.replace(' ', "T"), m / 60, m % 60), micros)
                }
            };
            proptest::prop_assert_eq!(parse_timestamp_micros(&text), Some(expected), "{}", text);
            let civil = Civil::from_unix_seconds(micros.div_euclid(1_000_000));
            let spelled = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second
            );
            proptest::prop_assert_eq!(spelled, &full[..19]);
        }
    }

    /// The text `write_timestamp` must give, spelled the slow and obvious way.
    fn spelled_out(micros: i64) -> String {
        let seconds = micros.div_euclid(1_000_000);
        let fraction = micros.rem_euclid(1_000_000);
        let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
        let s = seconds.rem_euclid(86_400);
        let year = if (0..=9999).contains(&y) {
            format!("{y:04}")
        } else {
            y.to_string()
        };
        let fraction = match fraction {
            0 => String::new(),
            f if f % 1000 == 0 => format!(".{:03}", f / 1000),
            f => format!(".{f:06}"),
        };
        format!(
            "{year}-{m:02}-{d:02}T{:02}:{:02}:{:02}{fraction}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }

    proptest::proptest! {
        #[test]
        fn writes_what_spelling_out_gives(
            micros in MIN_MICROS - 86_400_000_000..=MAX_MICROS + 86_400_000_000,
            shape in 0u8..3,
        ) {
            // Whole seconds and whole milliseconds are the common shapes; make them common.
            let micros = match shape {
                0 => micros - micros.rem_euclid(1_000_000),
                1 => micros - micros.rem_euclid(1_000),
                _ => micros,
            };
            let mut out = b"before,".to_vec();
            write_timestamp(&mut out, micros);
            proptest::prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("before,{}", spelled_out(micros))
            );
        }
    }
}
