//! The engine without the binary: convert the bundled example export into `./out-library`
//! with the library crates alone (what the README's "How it works" shows).
//!
//! Usage: `cargo run --example library [EXPORT] [DEST]`.

use std::sync::Arc;

use zephr_dest::local::LocalDir;
use zephr_engine::export::{Export, ExportOptions};
use zephr_engine::input::{InputSpec, open_all};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().unwrap_or_else(|| "examples/export.json".into());
    let output = args.next().unwrap_or_else(|| "out-library".into());

    let dest = Arc::new(LocalDir::open(output.as_ref())?);
    // Locked, recovered from any interrupted run, checked for an existing dataset.
    let mut export = Export::open(dest, ExportOptions::new())?;
    // Files, `-` for stdin, or s3:// gs:// az:// URLs; several inputs are one export.
    let inputs = InputSpec::parse_all(&[input])?;
    // Committed (manifest last) when this returns Ok.
    let stats = export.run(open_all(inputs, Default::default()), &mut |_running| {})?;
    print!("{} items into {output}:", stats.items);
    for (table, rows) in stats.rows.iter() {
        print!(" {} {rows} rows;", table.name());
    }
    println!();
    Ok(())
}
