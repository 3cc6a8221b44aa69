//! URLs as messages show them: secrets in the query string or the user part hidden.

/// A URL as messages, logs, summaries and the manifest show it: its query string and
/// fragment hidden (`?<hidden>`: a proxy's `?token=...`, an Azure SAS token) and any
/// `user:password@` too (`<hidden>@`), whether or not the text parses as a URL. Every place
/// that prints a base URL or a bucket URL given by the user goes through here.
pub fn redact_url(url: &str) -> String {
    let (kept, hidden) = match url.find(['?', '#']) {
        Some(cut) => (&url[..cut], Some(&url[cut..cut + 1])),
        None => (url, None),
    };
    let authority_start = kept.find("://").map_or(0, |i| i + 3);
    let authority_end = kept[authority_start..]
        .find('/')
        .map_or(kept.len(), |i| authority_start + i);
    let mut out = match kept[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}<hidden>{}",
            &kept[..authority_start],
            &kept[authority_start + at..]
        ),
        None => kept.to_owned(),
    };
    if let Some(mark) = hidden {
        out.push_str(mark);
        out.push_str("<hidden>");
    }
    out
}
