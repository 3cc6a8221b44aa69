//! Unit tests of the state-events reader: columns, cell text, shapes and errors.

use std::sync::{Arc, Mutex};

use arrow_array::{Array, StringArray};

use super::*;
use zephr_core::error::Chain;

/// A writer that keeps what it was given.
#[derive(Debug, Default)]
struct Collected {
    csv: Vec<u8>,
    cells: Vec<Vec<Option<String>>>,
}

struct Collect(Arc<Mutex<Collected>>);

impl TableWriter for Collect {
    fn write(&mut self, batch: &zephr_core::table::ColumnBatch) -> Result<(), WriteError> {
        let mut c = self.0.lock().unwrap();
        c.csv.extend_from_slice(&batch.csv);
        let arrow = batch.arrow.as_ref().unwrap();
        for row in 0..arrow.num_rows() {
            let cells = arrow
                .columns()
                .iter()
                .map(|col| {
                    let col = col.as_any().downcast_ref::<StringArray>().unwrap();
                    col.is_valid(row).then(|| col.value(row).to_owned())
                })
                .collect();
            c.cells.push(cells);
        }
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<Vec<WrittenFile>, WriteError> {
        Ok(Vec::new())
    }
}

fn run(text: &'static str) -> Result<(EventsStats, Collected), StateEventsError> {
    let got = Arc::new(Mutex::new(Collected::default()));
    let sink = got.clone();
    let open = || Ok(Box::new(text.as_bytes()) as Box<dyn Read + Send>);
    let formats = Formats {
        csv: true,
        parquet: true,
        xlsx: false,
    };
    let stats = export(
        &open,
        "events.x",
        formats,
        CsvDialect::Plain,
        &crate::control::Cancel::new(),
        &mut |_, _| Ok(vec![Box::new(Collect(sink.clone())) as Box<dyn TableWriter>]),
    )?;
    let got = std::mem::take(&mut *got.lock().unwrap());
    Ok((stats, got))
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn csv_keeps_header_order_and_empty_is_null() {
    let (stats, got) =
        run("\u{feff}when,what,who\n2024-01-01,\"a,b\",\nx,\"two\nlines\",z\n").unwrap();
    assert_eq!(stats.format, EventsFormat::Csv);
    assert_eq!(stats.columns, ["when", "what", "who"]);
    assert_eq!(stats.rows, 2);
    assert_eq!(
        got.cells,
        vec![
            vec![s("2024-01-01"), s("a,b"), None],
            vec![s("x"), s("two\nlines"), s("z")],
        ]
    );
    assert_eq!(got.csv, b"2024-01-01,\"a,b\",\nx,\"two\nlines\",z\n");
}

#[test]
fn json_array_and_ndjson_take_the_union_of_keys() {
    let array = r#" [{"b":1.50,"a":"x\"y"},
        {"c":{"k": [1, 2]},"a":null,"d":true},
        {"b":-0}] "#;
    let ndjson = "{\"b\":1.50,\"a\":\"x\\\"y\"}\n{\"c\":{\"k\": [1, 2]},\"a\":null,\"d\":true}\n\n{\"b\":-0}\n";
    for text in [array, ndjson] {
        let (stats, got) = run(text).unwrap();
        assert_eq!(stats.format, EventsFormat::Json);
        assert_eq!(stats.columns, ["b", "a", "c", "d"], "{text}");
        assert_eq!(
            got.cells,
            vec![
                vec![s("1.50"), s("x\"y"), None, None],
                vec![None, None, s("{\"k\":[1,2]}"), s("true")],
                vec![s("-0"), None, None, None],
            ]
        );
    }
}

#[test]
fn empty_sources() {
    let (stats, got) = run("[]").unwrap();
    assert_eq!((stats.columns.len(), stats.rows), (0, 0));
    assert!(got.cells.is_empty());
    let (stats, _) = run("a,b\n").unwrap();
    assert_eq!((stats.columns.len(), stats.rows), (2, 0));
    let (stats, _) = run("[{}, {}]").unwrap();
    assert_eq!((stats.columns.len(), stats.rows), (0, 0));
}

#[test]
fn errors_name_the_event_and_place() {
    let e = run("[{\"a\":1},\n 5]").unwrap_err();
    let e = Chain(&e).to_string();
    assert!(
        e.starts_with("events.x: event 2: invalid type: integer `5`, expected a JSON object (one state event) at line 2"),
        "{e}"
    );
    let e = run("{\"a\":1}\n{\"a\":").unwrap_err();
    let e = Chain(&e).to_string();
    assert!(e.starts_with("events.x: event 2: EOF while parsing"), "{e}");
    let e = run("[{\"a\":1}] x").unwrap_err();
    let e = Chain(&e).to_string();
    assert!(
        e.starts_with("events.x: event 2: trailing characters"),
        "{e}"
    );
    let e = run("a,b\n1,2,3\n").unwrap_err();
    let e = Chain(&e).to_string();
    assert!(e.starts_with("events.x: CSV error: record 1"), "{e}");
    let e = run("a,a\n").unwrap_err();
    let e = Chain(&e).to_string();
    assert_eq!(
        e,
        "events.x: the header names column \"a\" twice; every column must have its own name"
    );
}

#[test]
fn spools_pages_of_every_shape() {
    let mut out = Vec::new();
    let flat = br#"{"results":[{"a":1},{"b" : [1, 2]}],"meta":{"count":2},"links":{"next":null}}"#;
    assert_eq!(spool_page(flat, 1, &mut out).unwrap(), 2);
    assert_eq!(
        spool_page(br#"{"results":[[{"c":"x y"}],[]]}"#, 2, &mut out).unwrap(),
        1
    );
    assert_eq!(spool_page(br#"[{"d":null}]"#, 3, &mut out).unwrap(), 1);
    assert_eq!(spool_page(br#"{"results":null}"#, 4, &mut out).unwrap(), 0);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"a\":1}\n{\"b\":[1,2]}\n{\"c\":\"x y\"}\n{\"d\":null}\n"
    );
    let e = spool_page(b"<html>", 5, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "state events page 5: expected a JSON envelope or array");
    let e = spool_page(br#"{"results":[1]}"#, 6, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "state events page 6: event 1 is not a JSON object");
}

#[test]
fn sniffs_the_format() {
    assert_eq!(sniff(b"\xEF\xBB\xBF \n[{}]"), EventsFormat::Json);
    assert_eq!(sniff(b"{}"), EventsFormat::Json);
    assert_eq!(sniff(b"a,b\n"), EventsFormat::Csv);
    assert_eq!(sniff(b""), EventsFormat::Csv);
}
