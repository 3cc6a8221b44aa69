//! Deterministic synthetic Zephr user exports, for `zephr-etl generate`, tests and benchmarks.
//!
//! The output is a top-level JSON array with one item per line, shaped like a real export
//! (SPEC section 1) and deliberately full of the awkward cases the converter must survive:
//! unicode and emoji, quotes, commas, newlines, tabs and backslashes inside strings, `\uXXXX`
//! escapes, nulls next to missing keys, both spellings of the grant fields, timestamps with
//! fractions and offsets, `seq-no` as a string, and unmapped fields that must end up in `extra`.
//!
//! Everything comes from a small seeded PRNG and is written with plain string pushes (no
//! `serde_json::Value` per item), so the same [`GenerateSpec`] always yields the same bytes and
//! an optimised build writes several hundred MB/s.

use std::io::{self, BufWriter, Write};

use crate::timestamp::Civil;

/// What to generate: how many users, from which seed, and which optional parts to include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenerateSpec {
    /// Number of items (one user each) in the export.
    pub users: u64,
    /// PRNG seed; the same spec always produces byte-identical output.
    pub seed: u64,
    /// Include `"grants": {"results": [...]}` (0–4 grants per user), like `grants=true`.
    pub grants: bool,
    /// Include `user.attributes`, like `attributes=true`.
    pub attributes: bool,
}

/// Writes a synthetic export for `spec` to `out` as `[\n{item},\n{item}\n]\n`
/// (`[]\n` for zero users).
///
/// The output is buffered internally, so `out` may be an unbuffered file or stdout.
pub fn write_export<W: Write>(spec: &GenerateSpec, out: W) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 17, out);
    if spec.users == 0 {
        out.write_all(b"[]\n")?;
        return out.flush();
    }
    out.write_all(b"[\n")?;
    let mut g = Gen {
        rng: Rng::new(spec.seed),
        buf: String::with_capacity(8 * 1024),
        grants: spec.grants,
        attributes: spec.attributes,
    };
    for index in 0..spec.users {
        g.buf.clear();
        if index > 0 {
            g.buf.push_str(",\n");
        }
        g.item(index);
        out.write_all(g.buf.as_bytes())?;
    }
    out.write_all(b"\n]\n")?;
    out.flush()
}

/// splitmix64: tiny, fast, and good enough for test data; owning it (rather than pulling a
/// crate) keeps the output stable across dependency upgrades.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the tiny bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// (display name, ASCII slug for e-mail addresses and usernames).
const FIRST_NAMES: &[(&str, &str)] = &[
    ("Gwen", "gwen"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Björn", "bjorn"),
    ("François", "francois"),
    ("Łukasz", "lukasz"),
    ("Søren", "soren"),
    ("Ægir", "aegir"),
    ("Chloé", "chloe"),
    ("Mohammed", "mohammed"),
    ("Aiko", "aiko"),
    ("李", "li"),
    ("美咲", "misaki"),
    ("Анна", "anna"),
    ("Δημήτρης", "dimitris"),
    ("Sam 😀", "sam"),
    ("👩‍💻 Dev", "dev"),
    ("Renée", "renee"),
    ("Siobhán", "siobhan"),
    ("Ana María", "anamaria"),
    ("John", "john"),
    ("Mary", "mary"),
    ("Tab\tName", "tab"),
    ("Line\nBreak", "line"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("Smith", "smith"),
    ("García", "garcia"),
    ("Müller", "muller"),
    ("O'Brien", "obrien"),
    ("Øvergård", "overgard"),
    ("王", "wang"),
    ("佐藤", "sato"),
    ("Kowalski", "kowalski"),
    ("Dupont-Élise", "dupont"),
    ("van der Berg", "vanderberg"),
    ("Smith, Jr.", "smithjr"),
    ("\"The Rock\" Johnson", "johnson"),
    ("Nguyễn", "nguyen"),
    ("Back\\slash", "backslash"),
    ("Jones", "jones"),
    ("Brown", "brown"),
];

const DOMAINS: &[&str] = &[
    "example.com",
    "mail.example.org",
    "news.example.co.uk",
    "example.net",
    "corp.example.de",
];

const COUNTRIES: &[&str] = &[
    "GB",
    "US",
    "DE",
    "FR",
    "ES",
    "JP",
    "BR",
    "IN",
    "Côte d'Ivoire",
    "日本",
];

const COMPANIES: &[&str] = &[
    "Acme, Inc.",
    "\"Quoted\" Ltd",
    "O'Brien & Sons",
    "Back\\slash Corp",
    "Tab\tSeparated GmbH",
    "Multi\nLine LLC",
    "株式会社サンプル",
    "Café \"Le Monde\", SARL",
    "",
    "Zeta 😀 Labs",
    "Plain Company",
];

const TAGS: &[&str] = &[
    "sports",
    "politics",
    "tech",
    "culture",
    "food, drink",
    "\"quoted\"",
    "日本",
    "a\\b",
];

const TENANTS: &[&str] = &["acme|www", "acme|app", "acme|amp", "tenant|site"];
const REG_STATES: &[&str] = &["complete", "complete", "complete", "partial", "incomplete"];
const PRODUCTS: &[&str] = &[
    "gold",
    "silver",
    "bronze",
    "digital-only",
    "print+digital",
    "trial",
];
const EXPIRY_STATES: &[&str] = &["pending", "active", "active", "expired"];
const ENTITLEMENT_TYPES: &[&str] = &["bundle", "entitlement", "meter", "credits"];
/// Numbers whose text must survive untouched (`number as written`).
const ODD_NUMBERS: &[&str] = &["1250", "-3.0", "0", "1.5e3", "2E-2", "12.000", "-0", "7"];

/// 2015-01-01T00:00:00Z and the span (~10 years) the synthetic timestamps fall in.
const EPOCH_2015: u64 = 1_420_070_400;
const TEN_YEARS: u64 = 10 * 365 * 86_400;

/// Attribute slots; each user gets 6–12 of them in shuffled order.
const ATTRIBUTE_SLOTS: usize = 14;

/// Per-export state: the PRNG and the reusable line buffer of the current item.
struct Gen {
    rng: Rng,
    buf: String,
    grants: bool,
    attributes: bool,
}

impl Gen {
    fn item(&mut self, index: u64) {
        let user_id = self.uuid();
        let first = self.rng.pick(FIRST_NAMES);
        let last = self.rng.pick(LAST_NAMES);
        // A few exports put `seq-no` first; key order must not matter to the reader.
        let seq_first = self.rng.chance(30);
        self.buf.push('{');
        if seq_first {
            self.seq_no(index);
            self.buf.push(',');
        }
        self.user(&user_id, first, last);
        if !seq_first {
            self.buf.push(',');
            self.seq_no(index);
        }
        if self.grants {
            self.buf.push(',');
            self.grants(&user_id);
        }
        // Where extended profiles live is undocumented; this one is unmapped and goes to extra.
        if self.rng.chance(40) {
            self.buf.push_str(",\"extended_profiles\":");
            self.extended_profile();
        }
        self.buf.push('}');
    }

    fn user(&mut self, user_id: &[u8; 36], first: (&str, &str), last: (&str, &str)) {
        self.buf.push_str("\"user\":{\"user_id\":");
        self.push_ascii_str(user_id);

        self.buf.push_str(",\"identifiers\":{");
        let has_email = !self.rng.chance(30);
        let has_username = !has_email || self.rng.chance(200);
        if has_email {
            self.buf.push_str("\"email_address\":\"");
            self.buf.push_str(first.1);
            self.buf.push('.');
            self.buf.push_str(last.1);
            if self.rng.chance(150) {
                self.buf.push_str("+news");
            }
            push_u64(&mut self.buf, self.rng.below(10_000));
            self.buf.push('@');
            let domain = self.rng.pick(DOMAINS);
            self.buf.push_str(domain);
            self.buf.push('"');
        }
        if has_username {
            if has_email {
                self.buf.push(',');
            }
            self.buf.push_str("\"username\":");
            if self.rng.chance(300) {
                // A display-style username keeps unicode in the identifiers.
                self.json_str(first.0);
            } else {
                self.buf.push('"');
                self.buf.push_str(first.1);
                self.buf.push('_');
                push_u64(&mut self.buf, self.rng.below(100_000));
                self.buf.push('"');
            }
        }
        if self.rng.chance(50) {
            // An identifier type the tool does not map: stays in users.extra.
            self.buf.push_str(",\"phone_number\":\"+44 20 7946 ");
            push_padded(&mut self.buf, self.rng.below(10_000), 4);
            self.buf.push('"');
        }
        self.buf.push('}');

        self.buf.push_str(",\"email_verified\":");
        let verified = self.rng.below(100);
        self.buf.push_str(match verified {
            0..5 => "null",
            5..40 => "false",
            _ => "true",
        });

        if !self.rng.chance(50) {
            self.buf.push_str(",\"tracking_id\":");
            let tracking = self.uuid();
            self.push_ascii_str(&tracking);
        }

        let registered = EPOCH_2015 + self.rng.below(TEN_YEARS);
        self.buf.push_str(",\"registered\":");
        self.iso_timestamp(registered);

        self.buf.push_str(",\"registration_tenant\":\"");
        let tenant = self.rng.pick(TENANTS);
        self.buf.push_str(tenant);
        self.buf.push_str("\",\"registration_state\":\"");
        let state = self.rng.pick(REG_STATES);
        self.buf.push_str(state);
        self.buf.push('"');

        match self.rng.below(100) {
            // Missing and null both mean "never logged in".
            0..10 => {}
            10..15 => self.buf.push_str(",\"last_login\":null"),
            _ => {
                let login = registered + self.rng.below(3 * 365 * 86_400);
                self.buf.push_str(",\"last_login\":");
                self.iso_timestamp(login);
            }
        }

        if self.attributes {
            self.buf.push_str(",\"attributes\":");
            self.attributes(first.0, last.0);
        }

        if self.rng.chance(40) {
            // An unmapped user field, nested, with a `\/` escape that must survive verbatim.
            self.buf.push_str(",\"foreign_keys\":{\"crm\":\"CRM-");
            push_padded(&mut self.buf, self.rng.below(1_000_000), 6);
            self.buf.push_str(
                "\",\"profile_url\":\"https:\\/\\/example.com\\/u\\/1\",\"legacy\":null}",
            );
        }
        self.buf.push('}');
    }

    fn seq_no(&mut self, index: u64) {
        let seq = index * 3 + 1 + self.rng.below(3);
        self.buf.push_str("\"seq-no\":");
        // Some exporters quote it; the SPEC calls that a lossless coercion.
        if self.rng.chance(20) {
            self.buf.push('"');
            push_u64(&mut self.buf, seq);
            self.buf.push('"');
        } else {
            push_u64(&mut self.buf, seq);
        }
    }

    fn grants(&mut self, user_id: &[u8; 36]) {
        self.buf.push_str("\"grants\":{\"results\":[");
        let count = match self.rng.below(100) {
            0..33 => 0,
            33..65 => 1,
            65..83 => 2,
            83..93 => 3,
            _ => 4,
        };
        for i in 0..count {
            if i > 0 {
                self.buf.push(',');
            }
            self.grant(user_id);
        }
        self.buf.push_str("]}");
    }

    fn grant(&mut self, user_id: &[u8; 36]) {
        let grant_id = self.uuid();
        let both_spellings = self.rng.chance(10);
        self.buf.push('{');
        // Drawn even when both spellings are written, so the random sequence (and every other
        // value of the export) stays the same.
        let camel = self.rng.chance(650);
        self.buf.push_str(if camel || both_spellings {
            "\"grantId\":"
        } else {
            "\"grant_id\":"
        });
        self.push_ascii_str(&grant_id);
        if both_spellings {
            // camelCase wins; the snake_case copy goes to grants.extra.
            self.buf.push_str(",\"grant_id\":");
            self.push_ascii_str(&grant_id);
        }

        match self.rng.below(100) {
            0..8 => {}
            8..11 => {
                // A grant owned by someone else (e.g. a company account): kept in extra.
                self.buf.push_str(",\"user_id\":");
                let other = self.uuid();
                self.push_ascii_str(&other);
            }
            _ => {
                self.buf.push_str(",\"user_id\":");
                self.push_ascii_str(user_id);
            }
        }

        if !self.rng.chance(80) {
            self.buf.push_str(",\"account_id\":");
            let account = self.uuid();
            self.push_ascii_str(&account);
        }

        self.buf.push_str(",\"expiry_state\":\"");
        let expiry = if self.rng.chance(5) {
            "revoked"
        } else {
            self.rng.pick(EXPIRY_STATES)
        };
        self.buf.push_str(expiry);
        self.buf.push_str("\",\"entitlement_type\":\"");
        let kind = self.rng.pick(ENTITLEMENT_TYPES);
        self.buf.push_str(kind);
        self.buf.push_str("\",\"entitlement_id\":");
        let entitlement = self.uuid();
        self.push_ascii_str(&entitlement);
        self.buf.push_str(",\"product_id\":\"");
        let product = self.rng.pick(PRODUCTS);
        self.buf.push_str(product);
        self.buf.push('"');

        let start = EPOCH_2015 + self.rng.below(TEN_YEARS);
        self.buf.push_str(",\"startTime\":");
        self.grant_timestamp(start);
        match self.rng.below(100) {
            // Missing and null both mean the grant never ends.
            0..15 => {}
            15..25 => self.buf.push_str(",\"endTime\":null"),
            _ => {
                let end = start + 86_400 + self.rng.below(2 * 365 * 86_400);
                self.buf.push_str(",\"endTime\":");
                self.grant_timestamp(end);
            }
        }
        let created = start - self.rng.below(86_400);
        self.buf.push_str(if self.rng.chance(650) {
            ",\"createdAt\":"
        } else {
            ",\"created_at\":"
        });
        self.grant_timestamp(created);

        if self.rng.chance(30) {
            self.buf
                .push_str(",\"metadata\":{\"campaign\":\"spring, 2022\",\"n\":1.50}");
        }
        self.buf.push('}');
    }

    fn attributes(&mut self, first: &str, last: &str) {
        let mut slots: [u8; ATTRIBUTE_SLOTS] = std::array::from_fn(|i| i as u8);
        // Fisher–Yates: each user lists its attributes in its own order.
        for i in (1..ATTRIBUTE_SLOTS).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            slots.swap(i, j);
        }
        let count = 6 + self.rng.below(7) as usize;
        self.buf.push('{');
        for (n, &slot) in slots[..count].iter().enumerate() {
            if n > 0 {
                self.buf.push(',');
            }
            self.attribute(slot, first, last);
        }
        self.buf.push('}');
    }

    fn attribute(&mut self, slot: u8, first: &str, last: &str) {
        match slot {
            0 => {
                self.buf.push_str("\"first-name\":");
                self.json_str(first);
            }
            1 => {
                self.buf.push_str("\"last-name\":");
                self.json_str(last);
            }
            2 => {
                self.buf.push_str("\"newsletter\":");
                let yes = self.rng.chance(500);
                self.buf.push_str(if yes { "true" } else { "false" });
            }
            3 => {
                let age = 18 + self.rng.below(72);
                self.buf.push_str("\"age\":");
                // Rarely a string: the value_type must then be `string`.
                if self.rng.chance(30) {
                    self.buf.push('"');
                    push_u64(&mut self.buf, age);
                    self.buf.push('"');
                } else {
                    push_u64(&mut self.buf, age);
                }
            }
            4 => {
                // Two decimals, often with a trailing zero ("3.50") that must be kept.
                self.buf.push_str("\"score\":");
                push_u64(&mut self.buf, self.rng.below(10));
                self.buf.push('.');
                let hundredths = if self.rng.chance(400) {
                    self.rng.below(10) * 10
                } else {
                    self.rng.below(100)
                };
                push_padded(&mut self.buf, hundredths, 2);
            }
            5 => {
                self.buf.push_str("\"country\":");
                let country = self.rng.pick(COUNTRIES);
                self.json_str(country);
            }
            6 => {
                self.buf.push_str("\"crmIdentifier\":\"CRM-");
                push_padded(&mut self.buf, self.rng.below(1_000_000), 6);
                self.buf.push('"');
            }
            7 => {
                self.buf.push_str("\"company\":");
                let company = self.rng.pick(COMPANIES);
                self.json_str(company);
            }
            8 => {
                // Sometimes pretty-ish, so the reader has to compact it.
                if self.rng.chance(150) {
                    self.buf.push_str(
                        "\"preferences\":{\"theme\": \"dark mode\", \"digest\": [\"daily\", \"weekly\"], \"quiet\": {\"from\": 22, \"to\": 7}}",
                    );
                } else {
                    self.buf.push_str("\"preferences\":{\"theme\":\"");
                    let theme = if self.rng.chance(500) {
                        "light"
                    } else {
                        "dark"
                    };
                    self.buf.push_str(theme);
                    self.buf.push_str("\",\"digest\":[\"daily\"],\"pages\":");
                    push_u64(&mut self.buf, self.rng.below(50));
                    self.buf.push('}');
                }
            }
            9 => {
                self.buf.push_str("\"tags\":[");
                let n = self.rng.below(4);
                for i in 0..n {
                    if i > 0 {
                        self.buf.push(',');
                    }
                    let tag = self.rng.pick(TAGS);
                    self.json_str(tag);
                }
                self.buf.push(']');
            }
            10 => self.buf.push_str("\"middle-name\":null"),
            11 => {
                self.buf.push_str("\"dob\":\"");
                let day = self.rng.below(60 * 365) as i64 - 365 * 5;
                let t = Civil::from_unix_seconds(day * 86_400);
                push_date(&mut self.buf, t.year, t.month, t.day);
                self.buf.push('"');
            }
            12 => {
                self.buf.push_str("\"phone\":\"+1 (555) 01");
                push_padded(&mut self.buf, self.rng.below(100), 2);
                self.buf.push('"');
            }
            _ => {
                self.buf.push_str("\"balance\":");
                let number = self.rng.pick(ODD_NUMBERS);
                self.buf.push_str(number);
            }
        }
    }

    fn extended_profile(&mut self) {
        self.buf.push_str("{\"app-");
        push_u64(&mut self.buf, 1 + self.rng.below(3));
        self.buf.push_str("\":{\"plan\":");
        let plan = self.rng.pick(PRODUCTS);
        self.json_str(plan);
        self.buf.push_str(",\"visits\":");
        push_u64(&mut self.buf, self.rng.below(500));
        self.buf.push_str(",\"note\":");
        let note = self.rng.pick(COMPANIES);
        self.json_str(note);
        self.buf.push_str(",\"last\":null}}");
    }

    /// A user timestamp: ISO-8601, mostly `Z`, sometimes with millis or a `+01:00` offset.
    fn iso_timestamp(&mut self, secs: u64) {
        self.buf.push('"');
        let form = self.rng.below(100);
        let (shift, zone): (i64, &str) = match form {
            0..80 => (0, "Z"),
            80..95 => (3_600, "+01:00"),
            _ => (-5 * 3_600, "-05:00"),
        };
        push_datetime(&mut self.buf, secs as i64 + shift, 'T');
        if self.rng.chance(200) {
            self.buf.push('.');
            push_padded(&mut self.buf, self.rng.below(1_000), 3);
        }
        self.buf.push_str(zone);
        self.buf.push('"');
    }

    /// A grant timestamp: `YYYY-MM-DD HH:MM:SS`, zone-less, sometimes with a fraction.
    fn grant_timestamp(&mut self, secs: u64) {
        self.buf.push('"');
        push_datetime(&mut self.buf, secs as i64, ' ');
        match self.rng.below(100) {
            0..85 => {}
            85..95 => {
                self.buf.push('.');
                push_padded(&mut self.buf, self.rng.below(1_000), 3);
            }
            95..98 => {
                self.buf.push('.');
                push_u64(&mut self.buf, self.rng.below(10));
            }
            _ => {
                self.buf.push('.');
                push_padded(&mut self.buf, self.rng.below(1_000_000), 6);
            }
        }
        self.buf.push('"');
    }

    /// A random version-4 UUID as its 36 ASCII characters.
    fn uuid(&mut self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hi = (self.rng.next() & !0xF000) | 0x4000;
        let lo = (self.rng.next() & !(0xC << 60)) | (0x8 << 60);
        let bytes = (u128::from(hi) << 64) | u128::from(lo);
        let mut out = [b'-'; 36];
        let mut nibble = 0;
        for (pos, slot) in out.iter_mut().enumerate() {
            if matches!(pos, 8 | 13 | 18 | 23) {
                continue;
            }
            *slot = HEX[((bytes >> (124 - 4 * nibble)) & 0xF) as usize];
            nibble += 1;
        }
        out
    }

    /// Pushes `"text"` for text known to need no escaping (UUIDs).
    fn push_ascii_str(&mut self, text: &[u8; 36]) {
        self.buf.push('"');
        // UUID text is pure ASCII hex and dashes, so this never fails.
        self.buf
            .push_str(std::str::from_utf8(text).unwrap_or_default());
        self.buf.push('"');
    }

    /// Pushes `text` as a JSON string; one in twenty gets every non-ASCII character (and `/`)
    /// written as `\uXXXX` / `\/`, so the reader meets escapes as well as raw UTF-8.
    fn json_str(&mut self, text: &str) {
        let escape_all = self.rng.chance(50);
        push_json_str(&mut self.buf, text, escape_all);
    }
}

fn push_json_str(buf: &mut String, text: &str, escape_all: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push('"');
    let plain = text
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && (b < 0x80 || !escape_all) && b != b'/');
    if plain {
        buf.push_str(text);
    } else {
        for c in text.chars() {
            match c {
                '"' => buf.push_str("\\\""),
                '\\' => buf.push_str("\\\\"),
                '\n' => buf.push_str("\\n"),
                '\t' => buf.push_str("\\t"),
                '\r' => buf.push_str("\\r"),
                '/' if escape_all => buf.push_str("\\/"),
                c if (c as u32) < 0x20 || (escape_all && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        buf.push_str("\\u");
                        for shift in [12, 8, 4, 0] {
                            buf.push(HEX[usize::from((*unit >> shift) & 0xF)] as char);
                        }
                    }
                }
                c => buf.push(c),
            }
        }
    }
    buf.push('"');
}

fn push_u64(buf: &mut String, mut n: u64) {
    // Digits go to a stack buffer and then in one push: much faster in unoptimised test builds.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    push_ascii(buf, &digits[at..]);
}

/// `n` zero-padded to `width` (at most 8) digits; `n` must fit.
fn push_padded(buf: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 8];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    push_ascii(buf, &digits[..width]);
}

/// Pushes bytes the caller built from ASCII digits, hex and punctuation only.
fn push_ascii(buf: &mut String, bytes: &[u8]) {
    buf.push_str(std::str::from_utf8(bytes).unwrap_or_default());
}

fn push_date(buf: &mut String, year: i64, month: u32, day: u32) {
    push_padded(buf, year as u64, 4);
    buf.push('-');
    push_padded(buf, u64::from(month), 2);
    buf.push('-');
    push_padded(buf, u64::from(day), 2);
}

/// `YYYY-MM-DD{sep}HH:MM:SS` for Unix seconds `secs` (all synthetic times are after 1970).
fn push_datetime(buf: &mut String, secs: i64, sep: char) {
    let t = Civil::from_unix_seconds(secs);
    push_date(buf, t.year, t.month, t.day);
    buf.push(sep);
    push_padded(buf, u64::from(t.hour), 2);
    buf.push(':');
    push_padded(buf, u64::from(t.minute), 2);
    buf.push(':');
    push_padded(buf, u64::from(t.second), 2);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn generate(users: u64, seed: u64, grants: bool, attributes: bool) -> Vec<u8> {
        let spec = GenerateSpec {
            users,
            seed,
            grants,
            attributes,
        };
        let mut out = Vec::new();
        write_export(&spec, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    fn parse(bytes: &[u8]) -> Vec<Value> {
        match serde_json::from_slice(bytes).expect("generated export must be valid JSON") {
            Value::Array(items) => items,
            other => panic!("expected a top-level array, got {other}"),
        }
    }

    #[test]
    fn zero_users_is_an_empty_array() {
        assert_eq!(generate(0, 7, true, true), b"[]\n");
    }

    #[test]
    fn same_seed_same_bytes() {
        assert_eq!(generate(300, 42, true, true), generate(300, 42, true, true));
        assert_eq!(generate(50, 0, false, false), generate(50, 0, false, false));
    }

    #[test]
    fn different_seed_different_bytes() {
        assert_ne!(generate(20, 1, true, true), generate(20, 2, true, true));
    }

    #[test]
    fn one_item_per_line() {
        let text = String::from_utf8(generate(25, 3, true, true)).expect("UTF-8");
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 25 + 3, "[, 25 items, ], and the empty tail");
        assert_eq!(lines[0], "[");
        assert_eq!(lines[26], "]");
        assert_eq!(lines[27], "");
        for (i, line) in lines[1..26].iter().enumerate() {
            assert!(line.starts_with('{'), "line {i}");
            let body = line.strip_suffix(',').unwrap_or(line);
            assert_eq!(
                i < 24,
                line.ends_with(','),
                "comma after every item but the last"
            );
            serde_json::from_str::<Value>(body).expect("each line is one item");
        }
    }

    #[test]
    fn parses_as_array_of_objects_with_user_ids() {
        for (grants, attributes) in [(false, false), (true, false), (false, true), (true, true)] {
            let items = parse(&generate(200, 11, grants, attributes));
            assert_eq!(items.len(), 200);
            for item in &items {
                let user = &item["user"];
                assert!(user["user_id"].is_string(), "{item}");
                assert_eq!(item.get("grants").is_some(), grants);
                assert_eq!(user.get("attributes").is_some(), attributes);
            }
        }
    }

    #[test]
    fn single_user_is_valid() {
        assert_eq!(parse(&generate(1, 5, true, true)).len(), 1);
    }

    #[test]
    fn feature_mix_occurs_in_200_users() {
        let bytes = generate(200, 1, true, true);
        let text = std::str::from_utf8(&bytes).expect("UTF-8");
        for needle in [
            "\"grantId\":",
            "\"grant_id\":",
            "\"createdAt\":",
            "\"created_at\":",
            "\"endTime\":null",
            "+01:00\"",
            "\"seq-no\":\"",
            "\"extended_profiles\":",
            "\"foreign_keys\":",
            "\"phone_number\":",
            "\"username\":",
            "\"email_verified\":null",
            "\"last_login\":null",
            "\\u",
            "\\n",
            "\\t",
            "\\\\",
            "\\\"",
            "\"metadata\":",
            ": \"dark mode\"",
        ] {
            assert!(text.contains(needle), "no {needle:?} in 200 users");
        }

        let items = parse(&bytes);
        let mut no_last_login = 0;
        let mut no_tracking = 0;
        let mut no_end = 0;
        let mut foreign_grant_owner = 0;
        let mut grant_counts = [0; 5];
        let mut value_types = std::collections::BTreeSet::new();
        let mut fraction_user = 0;
        let mut fraction_grant = 0;
        for item in &items {
            let user = &item["user"];
            let user_id = user["user_id"].as_str().expect("string user_id");
            no_last_login += usize::from(user.get("last_login").is_none());
            no_tracking += usize::from(user.get("tracking_id").is_none());
            let registered = user["registered"].as_str().expect("registered");
            fraction_user += usize::from(registered.contains('.'));
            let grants = item["grants"]["results"].as_array().expect("results array");
            grant_counts[grants.len()] += 1;
            for grant in grants {
                no_end += usize::from(grant.get("endTime").is_none());
                let start = grant["startTime"].as_str().expect("startTime");
                assert_eq!(start.as_bytes()[10], b' ');
                fraction_grant += usize::from(start.contains('.'));
                if let Some(owner) = grant.get("user_id") {
                    foreign_grant_owner += usize::from(owner.as_str() != Some(user_id));
                }
            }
            let attributes = user["attributes"].as_object().expect("attributes object");
            assert!((6..=12).contains(&attributes.len()));
            for value in attributes.values() {
                value_types.insert(match value {
                    Value::Null => "null",
                    Value::Bool(_) => "boolean",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                });
            }
        }
        assert!(no_last_login > 0 && no_tracking > 0 && no_end > 0);
        assert!(foreign_grant_owner > 0);
        assert!(fraction_user > 0 && fraction_grant > 0);
        assert!(grant_counts.iter().all(|&n| n > 0), "{grant_counts:?}");
        assert_eq!(value_types.len(), 6, "{value_types:?}");
    }

    #[test]
    fn size_per_user_is_near_target() {
        let users = 5_000;
        let bytes = generate(users, 9, true, true).len() as u64;
        let per_user = bytes / users;
        assert!(
            (950..=1_200).contains(&per_user),
            "{per_user} bytes per user"
        );
    }

    #[test]
    fn escapes_round_trip() {
        let mut buf = String::new();
        push_json_str(&mut buf, "a\"b\\c\nd\te/é😀\u{1}", true);
        assert_eq!(
            buf,
            "\"a\\\"b\\\\c\\nd\\te\\/\\u00e9\\ud83d\\ude00\\u0001\""
        );
        let back: String = serde_json::from_str(&buf).expect("valid JSON string");
        assert_eq!(back, "a\"b\\c\nd\te/é😀\u{1}");
    }

    #[test]
    fn calendar_is_right() {
        let mut buf = String::new();
        push_datetime(&mut buf, 1_614_181_408, 'T');
        assert_eq!(buf, "2021-02-24T15:43:28");
    }
}
