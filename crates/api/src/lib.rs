//! The Zephr Admin API client: credentials, request signing, query strings, a retrying HTTP
//! client and an in-order parallel paginator. Bytes in, no tables: the engine
//! (`zephr-engine`) feeds what it fetches to the same pipeline as a saved export.

#![warn(missing_docs)]

pub mod client;
pub mod pages;
pub mod query;
pub mod secret;
pub mod sign;

pub use client::{Client, ClientConfig, FetchError, RetryPolicy, tenant_base_url};
pub use pages::{
    BodyShape, PageError, PageInfo, PageReading, PagesError, PagesProgress, PagesSummary,
    fetch_pages, fetch_pages_with, parse_page_info,
};
pub use query::{EventsQuery, ExportQuery, QueryField};
pub use secret::{CredentialError, Credentials, SecretKey};
pub use sign::signature;

/// Path of the user export.
pub const USER_EXPORT_PATH: &str = "/v3/user-export";
/// Path of the state events export.
pub const EVENTS_EXPORT_PATH: &str = "/v4/user-export";
