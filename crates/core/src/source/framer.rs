//! Framing: from a stream of bytes to batches of raw items.
//!
//! The framer finds where each item of an export starts and ends without parsing it: it scans
//! structure only (brackets, strings, separators), copies each item's bytes into a
//! [`RawBatch`], and leaves the real parsing to the workers, so that parsing runs in parallel.
//! It reads through a buffer of fixed size, keeping only the item in progress, so memory does
//! not grow with the export. Nesting is tracked with a counter, never recursion, so no input
//! can exhaust the stack here.
//!
//! It recognises every shape of SPEC section 1 by the first non-blank byte and the first key:
//! a top-level array of items, the paginated envelope `{"results": [...], "meta": ...}` (flat
//! or nested results), and a stream of items (NDJSON). Whitespace is counted as it is skipped,
//! so every item knows its line and column at no extra cost.

use std::io::Read;
use std::sync::Arc;

use super::scan::scan_structure;
use super::syntax::{self, describe_byte};
use crate::error::{InputError, Location};

/// One framed item: its bytes in [`RawBatch::data`] and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSpan {
    /// The input's name for messages (a batch may hold the items of several inputs).
    pub input: Arc<str>,
    /// Where the item's bytes start in [`RawBatch::data`].
    pub start: usize,
    /// One past the item's last byte in [`RawBatch::data`].
    pub end: usize,
    /// 1-based number of the item in the whole export.
    pub number: u64,
    /// Byte offset of the item's first byte in its input.
    pub offset: u64,
    /// 1-based line of the item's first byte in its input.
    pub line: u64,
    /// 1-based column of the item's first byte, in bytes.
    pub column: u64,
    /// The item's size when it exceeded `max_item_bytes`: it was read past without being
    /// kept, so its range in [`RawBatch::data`] is empty.
    pub too_large: Option<u64>,
}

/// A batch of raw items, their bytes stored back to back.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// The items' bytes, back to back (nothing between them).
    pub data: Vec<u8>,
    /// The items in input order, each with its range in `data`.
    pub items: Vec<ItemSpan>,
}

impl RawBatch {
    /// The raw bytes of item `index`.
    pub fn item_bytes(&self, index: usize) -> &[u8] {
        let span = &self.items[index];
        &self.data[span.start..span.end]
    }

    /// The location of item `index`.
    pub fn location(&self, index: usize) -> Location {
        let span = &self.items[index];
        Location {
            input: span.input.clone(),
            offset: span.offset,
            line: span.line,
            column: span.column,
        }
    }
}

/// Items per batch unless `--batch-size` says otherwise. Smaller batches cost more hand-offs
/// and larger ones more memory in flight; with the allocator kept from returning memory (see
/// `crate::allocator`) 1,024 ran as fast as 2,048 with about 20 MiB less peak RSS.
pub const DEFAULT_BATCH_ITEMS: usize = 1024;

/// Sizes that bound the framer's memory and shape its batches.
#[derive(Debug, Clone, Copy)]
pub struct FramerOptions {
    /// Items per batch at most.
    pub batch_items: usize,
    /// Bytes of items per batch at most (a single larger item still makes a batch).
    pub batch_bytes: usize,
    /// Bytes asked of the reader at a time.
    pub buffer_size: usize,
    /// An item larger than this is not kept in memory: it becomes a bad item (see
    /// [`ItemSpan::too_large`]) and framing goes on after it.
    pub max_item_bytes: usize,
}

impl Default for FramerOptions {
    fn default() -> Self {
        FramerOptions {
            batch_items: DEFAULT_BATCH_ITEMS,
            batch_bytes: 4 << 20,
            buffer_size: 1 << 20,
            max_item_bytes: 64 << 20,
        }
    }
}

/// Where the framer is inside a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Just after the opening bracket: a value or the closing bracket may follow.
    Open,
    /// After a value: `,` or the closing bracket.
    AfterValue,
    /// After `,`: a value must follow.
    AfterComma,
}

/// What the framer is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// An array whose elements are items; when `allow_nested`, arrays inside it hold items
    /// too (the published envelope schema has `"results": [[item, ...]]`).
    Items { slot: Slot, allow_nested: bool },
    /// The paginated envelope object.
    Envelope { slot: Slot },
    /// Items one after another (NDJSON).
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Running,
    /// The export's top-level value is closed; only whitespace may follow.
    End,
    Done,
}

/// Why [`Framer::scan_value`] could not frame a value.
#[derive(Debug)]
enum ScanError {
    Input(InputError),
    /// The input ended inside the value, at `location`.
    Truncated {
        location: Location,
        inside: Inside,
    },
}

/// What the input ended inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inside {
    String,
    Container,
}

impl Inside {
    /// The message for an input that ends here; callers may add which item it was.
    fn message(self) -> String {
        let what = match self {
            Inside::String => "a string",
            Inside::Container => "an unclosed object or array",
        };
        format!(
            "the input ends inside {what}; the export is truncated: download it again or check \
             the disk was not full"
        )
    }
}

impl From<InputError> for ScanError {
    fn from(e: InputError) -> Self {
        ScanError::Input(e)
    }
}

impl From<ScanError> for InputError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Input(e) => e,
            ScanError::Truncated { location, inside } => InputError::Syntax {
                location,
                problem: inside.message(),
            },
        }
    }
}

/// How the scan of one value ended.
enum Scanned {
    /// The value is `buf[start..end]`.
    Value(usize, usize),
    /// The value is larger than the limit: it was read past without being kept, and ends at
    /// `buf[end]`; `size` is its length in bytes.
    TooLarge { end: usize, size: u64 },
}

/// Turns bytes from `R` into [`RawBatch`]es.
pub struct Framer<R> {
    reader: R,
    input: Arc<str>,
    opts: FramerOptions,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Input offset of `buf[0]`.
    base: u64,
    line: u64,
    /// Input offset where the current line starts.
    line_start: u64,
    stack: Vec<Context>,
    phase: Phase,
    next_number: u64,
    /// `meta.count` of an envelope, when seen before the results (for progress).
    pub declared_count: Option<u64>,
    /// Whether the envelope's `results` was met: an envelope without it is no export page.
    results_seen: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

fn describe(b: Option<u8>) -> String {
    match b {
        None => "the end of the input".to_string(),
        Some(b) => describe_byte(b),
    }
}

/// What a Zephr export looks like, for messages about inputs that are not one.
const EXPECTED_EXPORT: &str =
    "a Zephr export (a JSON array of items, a paginated `{\"results\": ...}` object or NDJSON)";

impl<R: Read> Framer<R> {
    /// A framer over `reader`, named `input` in errors; items are numbered from `first_number`.
    pub fn new(reader: R, input: Arc<str>, opts: FramerOptions, first_number: u64) -> Self {
        Framer::reusing(reader, input, opts, first_number, Vec::new())
    }

    /// [`Framer::new`] reading into `buffer`, which an earlier framer gave back with
    /// [`Framer::into_buffer`]. A fetch frames every page as its own input; a fresh zeroed
    /// megabyte for each was 2% of a fetch's CPU, page faults not counted.
    pub(crate) fn reusing(
        reader: R,
        input: Arc<str>,
        opts: FramerOptions,
        first_number: u64,
        mut buffer: Vec<u8>,
    ) -> Self {
        let capacity = opts.buffer_size.clamp(1, 1 << 24);
        if buffer.len() < capacity {
            buffer.resize(capacity, 0);
        }
        Framer {
            reader,
            input,
            opts,
            buf: buffer,
            pos: 0,
            len: 0,
            eof: false,
            base: 0,
            line: 1,
            line_start: 0,
            stack: Vec::new(),
            phase: Phase::Start,
            next_number: first_number,
            declared_count: None,
            results_seen: false,
        }
    }

    /// The read buffer, for the framer of the next input. One that a huge item grew is cut
    /// back to the usual size first, so that memory stays flat.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        let mut buf = self.buf;
        let usual = self.opts.buffer_size.clamp(1, 1 << 24);
        if buf.len() > 4 * usual {
            buf.truncate(usual);
            buf.shrink_to_fit();
        }
        buf
    }

    /// The number the next item will get.
    pub(crate) fn next_number(&self) -> u64 {
        self.next_number
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The location of `buf[index]`. `line` and `line_start` describe `pos`; the lines between
    /// `pos` and `index` are counted here, on the way to an error, not while scanning.
    fn location_at(&self, index: usize) -> Location {
        let offset = self.base + index as u64;
        let from = self.pos.min(index);
        let ahead = &self.buf[from..index];
        let (line, line_start) = match memchr::memrchr(b'\n', ahead) {
            Some(last) => (
                self.line + memchr::memchr_iter(b'\n', ahead).count() as u64,
                self.base + (from + last) as u64 + 1,
            ),
            None => (self.line, self.line_start),
        };
        Location {
            input: self.input.clone(),
            offset,
            line,
            column: offset - line_start + 1,
        }
    }

    /// Moves `pos` forward to `to`, counting the lines passed.
    fn advance_to(&mut self, to: usize) {
        let passed = &self.buf[self.pos..to];
        if let Some(last) = memchr::memrchr(b'\n', passed) {
            self.line += memchr::memchr_iter(b'\n', passed).count() as u64;
            self.line_start = self.base + (self.pos + last) as u64 + 1;
        }
        self.pos = to;
    }

    fn syntax(&self, index: usize, problem: impl Into<String>) -> InputError {
        InputError::Syntax {
            location: self.location_at(index),
            problem: problem.into(),
        }
    }

    /// Reads more bytes, keeping `buf[keep..]`. Returns how far the kept bytes moved left
    /// (callers shift their indices) and whether anything new arrived.
    fn fill(&mut self, keep: usize) -> Result<(usize, bool), InputError> {
        if self.eof {
            return Ok((0, false));
        }
        let shift = keep;
        if shift > 0 {
            self.buf.copy_within(keep..self.len, 0);
            self.len -= shift;
            self.pos -= shift;
            self.base += shift as u64;
        }
        let want = self.opts.buffer_size.max(1);
        if self.buf.len() < self.len + want {
            self.buf.resize(self.len + want, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.len..self.len + want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok((shift, false));
                }
                Ok(n) => {
                    self.len += n;
                    return Ok((shift, true));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Where the data stopped is where to look in a corrupt or cut-off file.
                Err(source) => {
                    return Err(InputError::Read {
                        location: self.location_at(self.len),
                        source,
                    });
                }
            }
        }
    }

    /// Skips whitespace (counting lines) and returns the next byte without consuming it.
    fn peek_non_ws(&mut self) -> Result<Option<u8>, InputError> {
        loop {
            while self.pos < self.len {
                let b = self.buf[self.pos];
                if !is_ws(b) {
                    return Ok(Some(b));
                }
                if b == b'\n' {
                    self.line += 1;
                    self.line_start = self.base + self.pos as u64 + 1;
                }
                self.pos += 1;
            }
            let keep = self.pos;
            if !self.fill(keep)?.1 {
                return Ok(None);
            }
        }
    }

    /// Fills `batch` with up to a batch of items. Returns `false` once the export is complete
    /// (the batch may still hold items then).
    pub fn next_batch(&mut self, batch: &mut RawBatch) -> Result<bool, InputError> {
        batch.data.clear();
        batch.items.clear();
        self.extend_batch(batch)
    }

    /// Adds items to `batch` until it is full. Returns `true` when it is full, `false` when
    /// this input is complete first (the batch may have room left for the next input's items).
    /// A batch that fills just as the input ends gets `true`; the next call then adds nothing
    /// and returns `false`.
    pub(crate) fn extend_batch(&mut self, batch: &mut RawBatch) -> Result<bool, InputError> {
        while batch.items.len() < self.opts.batch_items && batch.data.len() < self.opts.batch_bytes
        {
            if !self.step(batch)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Advances by one token or item. Returns `false` when the input is complete.
    fn step(&mut self, batch: &mut RawBatch) -> Result<bool, InputError> {
        if self.phase == Phase::Start {
            self.skip_bom()?;
        }
        let next = self.peek_non_ws()?;
        match self.phase {
            Phase::Done => return Ok(false),
            Phase::End => {
                return match next {
                    None => {
                        self.phase = Phase::Done;
                        Ok(false)
                    }
                    Some(b) => Err(self.syntax(
                        self.pos,
                        format!(
                            "unexpected {} after the end of the export; expected nothing more \
                             (is this two exports in one file? give them as separate inputs)",
                            describe(Some(b))
                        ),
                    )),
                };
            }
            Phase::Start => return self.start(next),
            Phase::Running => {}
        }
        let Some(context) = self.stack.last().copied() else {
            self.phase = Phase::End;
            return Ok(true);
        };
        match context {
            Context::Stream => match next {
                None => {
                    self.phase = Phase::Done;
                    Ok(false)
                }
                Some(_) => {
                    self.frame_item(batch)?;
                    Ok(true)
                }
            },
            Context::Items { slot, allow_nested } => self.in_items(batch, next, slot, allow_nested),
            Context::Envelope { slot } => self.in_envelope(next, slot),
        }
    }

    fn skip_bom(&mut self) -> Result<(), InputError> {
        while self.len - self.pos < 3 && !self.eof {
            let keep = self.pos;
            self.fill(keep)?;
        }
        if self.buf[self.pos..self.len].starts_with(b"\xEF\xBB\xBF") {
            self.pos += 3;
            self.line_start += 3;
        }
        Ok(())
    }

    fn start(&mut self, next: Option<u8>) -> Result<bool, InputError> {
        self.phase = Phase::Running;
        match next {
            None if self.consumed() == 0 => Err(self.syntax(
                self.pos,
                format!("the input is empty; expected {EXPECTED_EXPORT}"),
            )),
            None => Err(self.syntax(
                self.pos,
                format!("the input holds only whitespace; expected {EXPECTED_EXPORT}"),
            )),
            Some(b'[') => {
                self.pos += 1;
                self.stack.push(Context::Items {
                    slot: Slot::Open,
                    allow_nested: true,
                });
                Ok(true)
            }
            Some(b'{') => {
                if self.first_key_is_envelope()? {
                    self.pos += 1;
                    self.stack.push(Context::Envelope { slot: Slot::Open });
                } else {
                    self.stack.push(Context::Stream);
                }
                Ok(true)
            }
            Some(b) => {
                let what = match b {
                    b'"' => "a JSON string (a single value is not an export)".to_string(),
                    b'-' | b'0'..=b'9' => {
                        "a JSON number (a single value is not an export)".to_string()
                    }
                    b'<' => "`<` (an HTML or XML page? this input is not JSON)".to_string(),
                    b => format!("{} (this input is not JSON)", describe_byte(b)),
                };
                Err(self.syntax(
                    self.pos,
                    format!("expected `[` or `{{` at the start of a Zephr export, found {what}"),
                ))
            }
        }
    }

    /// Looks past `{` at the first key without consuming anything: `results`, `meta` and
    /// `links` begin a paginated envelope; anything else begins an item of an NDJSON stream.
    fn first_key_is_envelope(&mut self) -> Result<bool, InputError> {
        let mark = self.pos;
        let mut i = mark + 1;
        let mut key_start = None;
        loop {
            if i >= self.len {
                let (shift, more) = self.fill(mark.min(self.pos))?;
                i -= shift;
                if let Some(k) = key_start.as_mut() {
                    *k -= shift;
                }
                if !more {
                    return Ok(false);
                }
                continue;
            }
            let b = self.buf[i];
            match key_start {
                None if is_ws(b) => i += 1,
                None if b == b'"' => {
                    key_start = Some(i + 1);
                    i += 1;
                }
                None => return Ok(false),
                Some(k) => {
                    if b == b'"' {
                        let key = &self.buf[k..i];
                        return Ok(matches!(key, b"results" | b"meta" | b"links"));
                    }
                    if b == b'\\' || i - k > 16 {
                        return Ok(false);
                    }
                    i += 1;
                }
            }
        }
    }

    fn set_top(&mut self, context: Context) {
        if let Some(top) = self.stack.last_mut() {
            *top = context;
        }
    }

    /// Pops a closed container and marks its parent as having just read a value.
    fn close_container(&mut self) {
        self.stack.pop();
        match self.stack.last_mut() {
            Some(Context::Items { slot, .. }) | Some(Context::Envelope { slot }) => {
                *slot = Slot::AfterValue
            }
            Some(Context::Stream) => {}
            None => self.phase = Phase::End,
        }
    }

    fn in_items(
        &mut self,
        batch: &mut RawBatch,
        next: Option<u8>,
        slot: Slot,
        allow_nested: bool,
    ) -> Result<bool, InputError> {
        let Some(b) = next else {
            return Err(self.syntax(
                self.pos,
                format!(
                    "the input ends inside the array of items (expected {}); the export is \
                     truncated: download it again or check the disk was not full",
                    if slot == Slot::AfterValue {
                        "`,` or `]`"
                    } else {
                        "an item or `]`"
                    }
                ),
            ));
        };
        match (slot, b) {
            (Slot::AfterValue, b',') => {
                self.pos += 1;
                self.set_top(Context::Items {
                    slot: Slot::AfterComma,
                    allow_nested,
                });
            }
            (Slot::AfterValue | Slot::Open, b']') => {
                self.pos += 1;
                self.close_container();
            }
            (Slot::AfterValue, other) => {
                return Err(self.syntax(
                    self.pos,
                    format!(
                        "expected `,` or `]` after an item, found {}",
                        describe(Some(other))
                    ),
                ));
            }
            (_, b']') => {
                return Err(self.syntax(
                    self.pos,
                    "expected an item after `,`, found `]` (a trailing comma)",
                ));
            }
            (_, b',') => return Err(self.syntax(self.pos, "expected an item, found `,`")),
            (_, b'[') if allow_nested => {
                self.pos += 1;
                self.set_top(Context::Items {
                    slot: Slot::AfterValue,
                    allow_nested,
                });
                self.stack.push(Context::Items {
                    slot: Slot::Open,
                    allow_nested: false,
                });
            }
            _ => {
                self.frame_item(batch)?;
                self.set_top(Context::Items {
                    slot: Slot::AfterValue,
                    allow_nested,
                });
            }
        }
        Ok(true)
    }

    fn in_envelope(&mut self, next: Option<u8>, slot: Slot) -> Result<bool, InputError> {
        let Some(b) = next else {
            return Err(self.syntax(
                self.pos,
                "the input ends inside the `{\"results\": ...}` envelope; the export is truncated: \
                 download it again",
            ));
        };
        match (slot, b) {
            (Slot::AfterValue, b',') => {
                self.pos += 1;
                self.set_top(Context::Envelope {
                    slot: Slot::AfterComma,
                });
                return Ok(true);
            }
            (Slot::AfterValue | Slot::Open, b'}') => {
                if !self.results_seen {
                    // Not an empty page (that is `"results": []`): no export at all, which
                    // must not end as a successful export of nothing.
                    return Err(self.syntax(
                        self.pos,
                        "the `{...}` object ends without `\"results\"`: expected a paginated \
                         export page (`{\"results\": [items...], ...}`)",
                    ));
                }
                self.pos += 1;
                self.close_container();
                return Ok(true);
            }
            (Slot::AfterValue, other) => {
                return Err(self.syntax(
                    self.pos,
                    format!(
                        "expected `,` or `}}` in the envelope, found {}",
                        describe(Some(other))
                    ),
                ));
            }
            (_, b'"') => {}
            (_, other) => {
                return Err(self.syntax(
                    self.pos,
                    format!(
                        "expected a key in the envelope, found {}",
                        describe(Some(other))
                    ),
                ));
            }
        }
        let key_at = self.location_at(self.pos);
        let Scanned::Value(start, end) = self.scan_value(self.pos, 1 << 20)? else {
            return Err(InputError::Syntax {
                location: key_at,
                problem: "an envelope key longer than 1 MiB; this is not a Zephr export".into(),
            });
        };
        let key = String::from_utf8_lossy(&self.buf[start + 1..end - 1]).into_owned();
        self.advance_to(end);
        match self.peek_non_ws()? {
            Some(b':') => self.pos += 1,
            other => {
                return Err(self.syntax(
                    self.pos,
                    format!(
                        "expected `:` after the key {key:?}, found {}",
                        describe(other)
                    ),
                ));
            }
        }
        let value_byte = self.peek_non_ws()?;
        self.set_top(Context::Envelope {
            slot: Slot::AfterValue,
        });
        if key == "results" {
            self.results_seen = true;
            match value_byte {
                Some(b'[') => {
                    self.pos += 1;
                    self.stack.push(Context::Items {
                        slot: Slot::Open,
                        allow_nested: true,
                    });
                    return Ok(true);
                }
                other => {
                    return Err(self.syntax(
                        self.pos,
                        format!(
                            "expected the envelope's `results` to be an array, found {}",
                            describe(other)
                        ),
                    ));
                }
            }
        }
        if value_byte.is_none() {
            return Err(self.syntax(
                self.pos,
                format!("the input ends after the envelope key {key:?}"),
            ));
        }
        // Any other member (meta, links, ...) is small: frame it and check it is valid JSON.
        let value_at = self.location_at(self.pos);
        let (start, end) = match self.scan_value(self.pos, self.opts.max_item_bytes)? {
            Scanned::Value(start, end) => (start, end),
            Scanned::TooLarge { size, .. } => {
                return Err(InputError::TooLarge {
                    location: value_at,
                    what: format!("the envelope's {key:?}"),
                    size,
                    limit: self.opts.max_item_bytes,
                });
            }
        };
        let value = &self.buf[start..end];
        if let Err(e) = syntax::check(value) {
            return Err(self.syntax(
                start + e.offset,
                format!("invalid JSON in the envelope's {key:?}: {}", e.problem),
            ));
        }
        if key == "meta"
            && let Ok(meta) = serde_json::from_slice::<serde_json::Value>(value)
            && let Some(count) = meta.get("count").and_then(serde_json::Value::as_u64)
        {
            self.declared_count = Some(count);
        }
        self.advance_to(end);
        Ok(true)
    }

    /// Frames one item starting at `pos` and copies it into `batch`. An item larger than
    /// `max_item_bytes` is read past and recorded without its bytes.
    fn frame_item(&mut self, batch: &mut RawBatch) -> Result<(), InputError> {
        // `line` and `line_start` describe `pos` (no newline to count, no `Location` to build).
        let offset = self.base + self.pos as u64;
        let (line, column) = (self.line, offset - self.line_start + 1);
        // These cannot start a value; scanning them would frame an empty item.
        if let b @ (b']' | b'}' | b',' | b':') = self.buf[self.pos] {
            return Err(self.syntax(
                self.pos,
                format!("expected an item, found {}", describe(Some(b))),
            ));
        }
        let scanned = self
            .scan_value(self.pos, self.opts.max_item_bytes)
            .map_err(|e| match e {
                ScanError::Truncated { location, inside } => InputError::Syntax {
                    location,
                    problem: format!(
                        "{} (in item {}, which starts at byte {offset}, line {}, column {})",
                        inside.message(),
                        self.next_number,
                        line,
                        column
                    ),
                },
                ScanError::Input(e) => e,
            })?;
        let from = batch.data.len();
        let (end, too_large) = match scanned {
            Scanned::Value(start, end) => {
                batch.data.extend_from_slice(&self.buf[start..end]);
                (end, None)
            }
            Scanned::TooLarge { end, size } => (end, Some(size)),
        };
        batch.items.push(ItemSpan {
            input: self.input.clone(),
            start: from,
            end: batch.data.len(),
            number: self.next_number,
            offset,
            line,
            column,
            too_large,
        });
        self.next_number += 1;
        self.advance_to(end);
        Ok(())
    }

    /// Finds the end of the JSON value starting at `at` (which is `pos`), reading more input
    /// as needed. Returns the value's range in `buf` (valid until the next fill). A value larger
    /// than `limit` is not kept: once past the limit, scanned bytes are dropped at each refill
    /// (so memory stays bounded) and only its end and size are returned.
    fn scan_value(&mut self, at: usize, limit: usize) -> Result<Scanned, ScanError> {
        let begin = self.base + at as u64;
        let mut start = at;
        let mut i = at;
        let mut depth: u64 = 0;
        let mut in_string = false;
        let mut dropping = false;
        let first = self.buf[at];
        let scalar = !matches!(first, b'{' | b'[' | b'"');
        let done = |framer: &Self, start: usize, end: usize, dropping: bool| {
            let size = framer.base + end as u64 - begin;
            if dropping || size > limit as u64 {
                Scanned::TooLarge { end, size }
            } else {
                Scanned::Value(start, end)
            }
        };
        loop {
            if i >= self.len {
                if !dropping && i - start > limit {
                    dropping = true;
                }
                if dropping {
                    // `i` is one past the end when the buffer ends just after a backslash.
                    let cut = i.min(self.len);
                    self.advance_to(cut);
                    start = cut;
                }
                let (shift, more) = self.fill(start)?;
                start -= shift;
                i -= shift;
                if !more {
                    if scalar {
                        return Ok(done(self, start, i, dropping));
                    }
                    let inside = if in_string {
                        Inside::String
                    } else {
                        Inside::Container
                    };
                    // `i` is one past the end when the input ends just after a backslash.
                    return Err(ScanError::Truncated {
                        location: self.location_at(i.min(self.len)),
                        inside,
                    });
                }
                continue;
            }
            if !scalar {
                // The hot path: scan what is buffered in one tight loop.
                match scan_structure(&self.buf[..self.len], i, &mut depth, &mut in_string) {
                    Ok(end) => return Ok(done(self, start, end, dropping)),
                    Err(next) => {
                        i = next;
                        continue;
                    }
                }
            }
            let b = self.buf[i];
            if scalar {
                if is_ws(b) || matches!(b, b',' | b']' | b'}' | b'[' | b'{' | b'"') {
                    return Ok(done(self, start, i, dropping));
                }
                i += 1;
                continue;
            }
            unreachable!("containers and strings are scanned by scan_structure");
        }
    }
}
