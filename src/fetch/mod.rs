//! Live fetching from the Zephr Admin API: credentials, request signing, query strings, a
//! retrying HTTP client and an in-order parallel paginator. The bytes fetched feed the same
//! pipeline as a saved export ([`feed`]); a paginated fetch is committed in segments that
//! [`resume`] records and [`merge`] assembles; [`state_file`] remembers the last run.

pub mod client;
pub mod feed;
pub mod merge;
pub mod pages;
pub mod query;
pub mod resume;
pub mod secret;
pub mod sign;
pub mod state_file;

pub use client::{
    BodyStream, Client, ClientConfig, FetchError, RetryPolicy, TransientFailure, TypedBody,
    tenant_base_url,
};
pub use pages::{
    BodyShape, PageError, PageInfo, PageParser, PageReading, PagesError, PagesProgress,
    PagesSummary, fetch_pages, fetch_pages_with, parse_page_info,
};
pub use query::{EventsQuery, ExportQuery, QueryError};
pub use secret::{CredentialError, Credentials, SecretKey};
pub use sign::{authorization_header, signature};

/// Path of the user export.
pub const USER_EXPORT_PATH: &str = "/v3/user-export";
/// Path of the state events export.
pub const EVENTS_EXPORT_PATH: &str = "/v4/user-export";
