//! The query strings of the export endpoints, built from the `fetch` flags.
//!
//! The string built here is signed byte for byte (SPEC section 2), so it is built once, in
//! one fixed parameter order, and sent exactly as built. Values are percent-encoded except
//! for RFC 3986 unreserved characters and `:`, which the query component allows as is: an ISO
//! timestamp like `2024-01-01T00:00:00Z` then reads the same raw and decoded, so a server that
//! hashes either form agrees with us. A `+` in an offset is encoded, as it would otherwise
//! decode to a space.

use zephr_core::timestamp::parse_timestamp_micros;

/// Highest `rpp` accepted: Zephr documents no maximum, this keeps one page's body (held in
/// memory whole until committed) within reason.
pub(crate) const MAX_RPP: u32 = 10_000;

/// Parameters of `GET /v3/user-export` (SPEC section 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportQuery {
    /// `--grants`: include each user's grants.
    pub grants: bool,
    /// `--attributes`: include each user's attributes.
    pub attributes: bool,
    /// `--app-ids`: extended-profile app ids.
    pub app_ids: Vec<String>,
    /// `--app-ids-restrictive`: only users with a matching extended profile.
    pub app_ids_restrictive: bool,
    /// `--since`: users updated after this ISO-8601 time.
    pub since: Option<String>,
    /// `--registered-since`: users registered at or after this time.
    pub registered_since: Option<String>,
    /// `--registered-before`: users registered before this time.
    pub registered_before: Option<String>,
    /// `--rpp`: results per page (the server's default is 500).
    pub rpp: Option<u32>,
}

/// Parameters of `GET /v4/user-export?eventsExport=true` (the state events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// `--events-from`: start of the window, ISO-8601.
    pub from: String,
    /// `--events-to`: end of the window, ISO-8601.
    pub to: String,
    /// `--rpp`: results per page.
    pub rpp: Option<u32>,
}

/// A query parameter a caller sets. Errors name it by [`QueryField::param`]; the binary
/// names it by its flag instead (see [`QueryError::message_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryField {
    /// `appIds` of the user export ([`ExportQuery::app_ids`]).
    AppIds,
    /// `since` of the user export ([`ExportQuery::since`]).
    Since,
    /// `registeredSince` of the user export ([`ExportQuery::registered_since`]).
    RegisteredSince,
    /// `registeredBefore` of the user export ([`ExportQuery::registered_before`]).
    RegisteredBefore,
    /// `rpp` of either export.
    Rpp,
    /// `from` of the events export ([`EventsQuery::from`]).
    EventsFrom,
    /// `to` of the events export ([`EventsQuery::to`]).
    EventsTo,
}

impl QueryField {
    /// The API's name of the parameter (`appIds`, `since`, `rpp`, `from`...).
    pub fn param(self) -> &'static str {
        match self {
            QueryField::AppIds => "appIds",
            QueryField::Since => "since",
            QueryField::RegisteredSince => "registeredSince",
            QueryField::RegisteredBefore => "registeredBefore",
            QueryField::Rpp => "rpp",
            QueryField::EventsFrom => "from",
            QueryField::EventsTo => "to",
        }
    }
}

/// A query value the API would not accept. Each message starts with the field's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Not an ISO-8601 date or date-time.
    Timestamp {
        /// The field, e.g. [`QueryField::Since`].
        field: QueryField,
        /// The value given.
        value: String,
    },
    /// `rpp` outside 1..=MAX_RPP.
    Rpp(u32),
    /// An empty app id (e.g. `a,,b`).
    EmptyAppId,
    /// An app id holding a comma, which would split it in two on the wire.
    AppIdComma(String),
    /// A window that ends before it starts.
    ReversedWindow {
        /// The start given.
        from: String,
        /// The end given.
        to: String,
    },
}

impl QueryError {
    /// The field the error is about (the end of a reversed window).
    pub fn field(&self) -> QueryField {
        match self {
            QueryError::Timestamp { field, .. } => *field,
            QueryError::Rpp(_) => QueryField::Rpp,
            QueryError::EmptyAppId | QueryError::AppIdComma(_) => QueryField::AppIds,
            QueryError::ReversedWindow { .. } => QueryField::EventsTo,
        }
    }

    /// The message with each field called by `name`: the binary passes its flag names, so
    /// the library never spells a flag.
    pub fn message_with(&self, name: impl Fn(QueryField) -> &'static str) -> String {
        match self {
            QueryError::Timestamp { field, value } => format!(
                "{}: expected an ISO-8601 time (YYYY-MM-DD or \
                 YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]), got {value:?}",
                name(*field)
            ),
            QueryError::Rpp(n) => format!(
                "{}: must be between 1 and {MAX_RPP}, got {n}",
                name(QueryField::Rpp)
            ),
            QueryError::EmptyAppId => {
                format!("{}: app ids must not be empty", name(QueryField::AppIds))
            }
            QueryError::AppIdComma(id) => format!(
                "{}: app id {id:?} must not contain a comma",
                name(QueryField::AppIds)
            ),
            QueryError::ReversedWindow { from, to } => format!(
                "{} ({to}) is before {} ({from}); swap them",
                name(QueryField::EventsTo),
                name(QueryField::EventsFrom)
            ),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message_with(QueryField::param))
    }
}

impl std::error::Error for QueryError {}

impl ExportQuery {
    /// Checks every set field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), QueryError> {
        for id in &self.app_ids {
            if id.is_empty() {
                return Err(QueryError::EmptyAppId);
            }
            if id.contains(',') {
                return Err(QueryError::AppIdComma(id.clone()));
            }
        }
        check_time(QueryField::Since, self.since.as_deref())?;
        check_time(
            QueryField::RegisteredSince,
            self.registered_since.as_deref(),
        )?;
        check_time(
            QueryField::RegisteredBefore,
            self.registered_before.as_deref(),
        )?;
        check_rpp(self.rpp)
    }

    /// The query string (without `?`), with `page` appended when given. Only set flags appear,
    /// booleans as `true`, in the order: attributes, grants, appIds, appIdsRestrictive, since,
    /// registeredSince, registeredBefore, rpp, page.
    pub fn to_query(&self, page: Option<u32>) -> String {
        let mut q = QueryBuilder::default();
        if self.attributes {
            q.raw("attributes", "true");
        }
        if self.grants {
            q.raw("grants", "true");
        }
        if !self.app_ids.is_empty() {
            // The list separator stays a literal comma; each id is encoded on its own.
            let ids: Vec<String> = self.app_ids.iter().map(|id| encode(id)).collect();
            q.raw("appIds", &ids.join(","));
        }
        if self.app_ids_restrictive {
            q.raw("appIdsRestrictive", "true");
        }
        q.opt("since", self.since.as_deref());
        q.opt("registeredSince", self.registered_since.as_deref());
        q.opt("registeredBefore", self.registered_before.as_deref());
        if let Some(rpp) = self.rpp {
            q.raw("rpp", &rpp.to_string());
        }
        if let Some(page) = page {
            q.raw("page", &page.to_string());
        }
        q.0
    }
}

impl EventsQuery {
    /// Checks `from`, `to` and `rpp`.
    pub fn validate(&self) -> Result<(), QueryError> {
        check_time(QueryField::EventsFrom, Some(&self.from))?;
        check_time(QueryField::EventsTo, Some(&self.to))?;
        // Both are valid ISO-8601 now, so they parse; compare the instants, not the text.
        let instant = zephr_core::timestamp::parse_timestamp_micros;
        if let (Some(from), Some(to)) = (instant(&self.from), instant(&self.to))
            && to < from
        {
            return Err(QueryError::ReversedWindow {
                from: self.from.clone(),
                to: self.to.clone(),
            });
        }
        check_rpp(self.rpp)
    }

    /// `eventsExport=true&from=..&to=..[&rpp=..][&page=N]`.
    pub fn to_query(&self, page: Option<u32>) -> String {
        let mut q = QueryBuilder::default();
        q.raw("eventsExport", "true");
        q.opt("from", Some(&self.from));
        q.opt("to", Some(&self.to));
        if let Some(rpp) = self.rpp {
            q.raw("rpp", &rpp.to_string());
        }
        if let Some(page) = page {
            q.raw("page", &page.to_string());
        }
        q.0
    }
}

#[derive(Default)]
struct QueryBuilder(String);

impl QueryBuilder {
    /// Appends `name=value` with `value` already encoded.
    fn raw(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(name);
        self.0.push('=');
        self.0.push_str(value);
    }

    fn opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.raw(name, &encode(v));
        }
    }
}

/// What [`encode`] leaves as it is: RFC 3986's unreserved characters, and `:`.
const KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

/// Percent-encodes all but RFC 3986 unreserved characters and `:` (see the module docs).
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, KEPT).to_string()
}

fn check_rpp(rpp: Option<u32>) -> Result<(), QueryError> {
    match rpp {
        Some(n) if !(1..=MAX_RPP).contains(&n) => Err(QueryError::Rpp(n)),
        _ => Ok(()),
    }
}

fn check_time(field: QueryField, value: Option<&str>) -> Result<(), QueryError> {
    match value {
        Some(v) if !is_iso8601(v) => Err(QueryError::Timestamp {
            field,
            value: v.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]`, with real calendar days. The
/// crate's one calendar ([`parse_timestamp_micros`]) decides whether the text is a real
/// instant; this only narrows the spellings to the ones the Admin API documents (a `T`, a
/// zone as `Z` or `±HH:MM`).
pub fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    let spelled = b.len() == 10 || {
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            i += 1 + digits;
        }
        b.get(10) == Some(&b'T')
            && matches!(
                b.get(i..),
                Some([] | [b'Z'] | [b'+' | b'-', _, _, b':', _, _])
            )
    };
    spelled && parse_timestamp_micros(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for ok in [
            "2024-02-29",
            "2021-02-24T15:43:28Z",
            "2021-02-24T15:43:28",
            "2021-02-24T15:43:28.123456Z",
            "2021-02-24T15:43:28.5+01:00",
            "2021-02-24T15:43:28-05:30",
        ] {
            assert!(is_iso8601(ok), "{ok}");
        }
        for bad in [
            "",
            "2023-02-29",
            "2021-13-01",
            "2021-1-01",
            "2021-02-24 15:43:28",
            "2021-02-24T25:00:00Z",
            "2021-02-24T15:43",
            "2021-02-24T15:43:28.Z",
            "2021-02-24T15:43:28+0100",
            "2021-02-24T15:43:28+01:00x",
            "2021-02-24T15:43:28ZZ",
            "yesterday",
            "2021-02-2é",
        ] {
            assert!(!is_iso8601(bad), "{bad}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let q = ExportQuery {
            registered_before: Some("2021-02-30".into()),
            ..Default::default()
        };
        assert_eq!(
            q.validate().unwrap_err().to_string(),
            "registeredBefore: expected an ISO-8601 time (YYYY-MM-DD or \
             YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]), got \"2021-02-30\""
        );
        let q = ExportQuery {
            rpp: Some(0),
            ..Default::default()
        };
        assert_eq!(
            q.validate().unwrap_err().to_string(),
            "rpp: must be between 1 and 10000, got 0"
        );
        let q = ExportQuery {
            app_ids: vec!["a".into(), String::new()],
            ..Default::default()
        };
        assert_eq!(q.validate().unwrap_err(), QueryError::EmptyAppId);
        let q = ExportQuery {
            app_ids: vec!["a,b".into()],
            ..Default::default()
        };
        assert_eq!(
            q.validate().unwrap_err().to_string(),
            "appIds: app id \"a,b\" must not contain a comma"
        );
        let e = EventsQuery {
            from: "2024-01-01".into(),
            to: "soon".into(),
            rpp: None,
        };
        assert!(e.validate().unwrap_err().to_string().starts_with("to: "));
    }

    #[test]
    fn query_strings() {
        assert_eq!(ExportQuery::default().to_query(None), "");
        assert_eq!(ExportQuery::default().to_query(Some(1)), "page=1");
        let q = ExportQuery {
            grants: true,
            attributes: true,
            app_ids: vec!["app one".into(), "b&c".into()],
            app_ids_restrictive: true,
            since: Some("2021-02-24T15:43:28+01:00".into()),
            registered_since: Some("2020-01-01".into()),
            registered_before: Some("2021-01-01T00:00:00Z".into()),
            rpp: Some(250),
        };
        q.validate().unwrap();
        assert_eq!(
            q.to_query(Some(3)),
            "attributes=true&grants=true&appIds=app%20one,b%26c&appIdsRestrictive=true\
             &since=2021-02-24T15:43:28%2B01:00&registeredSince=2020-01-01\
             &registeredBefore=2021-01-01T00:00:00Z&rpp=250&page=3"
        );
        let e = EventsQuery {
            from: "2024-01-01T00:00:00Z".into(),
            to: "2024-02-01".into(),
            rpp: Some(100),
        };
        assert_eq!(
            e.to_query(Some(2)),
            "eventsExport=true&from=2024-01-01T00:00:00Z&to=2024-02-01&rpp=100&page=2"
        );
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn a_reversed_events_window_is_refused() {
        let query = |from: &str, to: &str| EventsQuery {
            from: from.into(),
            to: to.into(),
            rpp: None,
        };
        assert!(query("2024-03-01", "2024-04-01").validate().is_ok());
        assert!(
            query("2024-03-01T10:00:00+02:00", "2024-03-01T08:30:00Z")
                .validate()
                .is_ok()
        );
        assert_eq!(
            query("2024-04-01", "2024-03-01")
                .validate()
                .unwrap_err()
                .to_string(),
            "to (2024-03-01) is before from (2024-04-01); swap them"
        );
        // A caller names the fields its own way (the binary: by flag).
        let flag = |f: QueryField| match f {
            QueryField::EventsFrom => "--events-from",
            QueryField::EventsTo => "--events-to",
            _ => "other",
        };
        let e = query("2024-04-01", "2024-03-01").validate().unwrap_err();
        assert_eq!(e.field(), QueryField::EventsTo);
        assert_eq!(
            e.message_with(flag),
            "--events-to (2024-03-01) is before --events-from (2024-04-01); swap them"
        );
    }
}
