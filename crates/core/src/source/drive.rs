//! The one loop that drives the framer: every input in turn, cut into batches of raw items.
//!
//! `convert`'s pipeline, `inspect` and the first pass of `--wide-attributes` all read inputs
//! the same way, so they share this driver and differ only in what they do with a batch
//! ([`Batches`]). Items are numbered across inputs; a batch is filled from as many inputs as
//! it takes (a fetch frames every page as its own input, and batches of one 500-item page each
//! cost 13% more time than full ones); the framer's read buffer is handed from one input to
//! the next. The items framed before a framing error are handed on first, so that a problem
//! in one of them, which comes earlier in the input, is the one reported.

use std::io::Read;
use std::sync::Arc;

use super::framer::{Framer, FramerOptions, RawBatch};
use crate::error::InputError;

/// One input to frame: its name in messages and its (decompressed) bytes.
pub struct Input {
    /// The input's name in messages and locations (`<stdin>` for `-`).
    pub name: Arc<str>,
    /// The input's bytes, already decompressed.
    pub reader: Box<dyn Read + Send>,
}

/// One input stream of a run (a file, stdin, a fetched page), by the pipeline's name.
pub type Source = Input;

/// The inputs of a run, opened lazily in order (a file, stdin, or one fetched page each).
pub type Sources = Box<dyn Iterator<Item = Result<Input, InputError>> + Send>;

/// What a caller of [`drive`] does with the batches; the defaults suit a caller that reads
/// every batch and never stops early.
pub trait Batches {
    /// Asked before each input is opened and each batch is started: `false` stops.
    fn go_on(&mut self) -> bool {
        true
    }

    /// The batch to frame into next (a spare one to reuse its buffers, or a new one); may
    /// wait, and `None` stops.
    fn start(&mut self) -> Option<RawBatch> {
        Some(RawBatch::default())
    }

    /// A framed batch with at least one item; `false` stops.
    fn take(&mut self, batch: RawBatch) -> bool;

    /// A started batch that ended without an item (the inputs held no more).
    fn skip(&mut self, batch: RawBatch) {
        drop(batch);
    }
}

/// How [`drive`] ended.
#[derive(Debug)]
pub enum Driven {
    /// Every input was framed; the next item would have had this number.
    Finished {
        /// One past the last item's number.
        next_number: u64,
    },
    /// An input could not be opened or framed (after its earlier items were handed on).
    Failed(InputError),
    /// [`Batches`] said stop.
    Stopped,
}

/// Frames every input of `inputs` in order into batches for `batches`, numbering items from
/// `first_number`.
pub fn drive(
    inputs: impl IntoIterator<Item = Result<Input, InputError>>,
    opts: FramerOptions,
    first_number: u64,
    batches: &mut impl Batches,
) -> Driven {
    let mut next_number = first_number.max(1);
    let mut buffer = Vec::new();
    let mut started: Option<RawBatch> = None;
    let mut inputs = inputs.into_iter();
    loop {
        // A batch may wait for the next input, so stopping is checked here too.
        if !batches.go_on() {
            return Driven::Stopped;
        }
        let Some(input) = inputs.next() else {
            break;
        };
        let input = match input {
            Ok(input) => input,
            Err(e) => {
                if let Some(batch) = started.take()
                    && !hand_on(batches, batch)
                {
                    return Driven::Stopped;
                }
                return Driven::Failed(e);
            }
        };
        let mut framer = Framer::reusing(
            input.reader,
            input.name,
            opts,
            next_number,
            std::mem::take(&mut buffer),
        );
        loop {
            let batch = match &mut started {
                Some(batch) => batch,
                None => {
                    if !batches.go_on() {
                        return Driven::Stopped;
                    }
                    let Some(mut batch) = batches.start() else {
                        return Driven::Stopped;
                    };
                    batch.data.clear();
                    batch.items.clear();
                    started.insert(batch)
                }
            };
            let (full, failed) = match framer.extend_batch(batch) {
                Ok(full) => (full, None),
                Err(e) => (false, Some(e)),
            };
            if (full || failed.is_some())
                && let Some(batch) = started.take()
                && !hand_on(batches, batch)
            {
                return Driven::Stopped;
            }
            if let Some(e) = failed {
                return Driven::Failed(e);
            }
            if !full {
                break;
            }
        }
        next_number = framer.next_number();
        buffer = framer.into_buffer();
    }
    if let Some(batch) = started.take()
        && !hand_on(batches, batch)
    {
        return Driven::Stopped;
    }
    Driven::Finished { next_number }
}

/// Hands on a finished batch; `false` means stop.
fn hand_on(batches: &mut impl Batches, batch: RawBatch) -> bool {
    if batch.items.is_empty() {
        batches.skip(batch);
        return true;
    }
    batches.take(batch)
}

/// [`drive`] for a caller that looks at every item and stops only on an error: `each` gets
/// every batch; the result is the number the next item would have had.
pub(crate) fn for_each_batch(
    inputs: impl IntoIterator<Item = Result<Input, InputError>>,
    opts: FramerOptions,
    first_number: u64,
    each: impl FnMut(&RawBatch),
) -> Result<u64, InputError> {
    struct Each<F>(F);
    impl<F: FnMut(&RawBatch)> Batches for Each<F> {
        fn take(&mut self, batch: RawBatch) -> bool {
            (self.0)(&batch);
            true
        }
    }
    match drive(inputs, opts, first_number, &mut Each(each)) {
        Driven::Finished { next_number } => Ok(next_number),
        Driven::Failed(e) => Err(e),
        // `Each` never says stop.
        Driven::Stopped => Ok(first_number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, bytes: &'static [u8]) -> Result<Input, InputError> {
        Ok(Input {
            name: Arc::from(name),
            reader: Box::new(bytes),
        })
    }

    fn small() -> FramerOptions {
        FramerOptions {
            batch_items: 2,
            ..FramerOptions::default()
        }
    }

    #[test]
    fn frames_every_input_into_full_batches_numbered_across_inputs() {
        let mut seen = Vec::new();
        let next = for_each_batch(
            [
                input("a", b"[{\"n\":1},{\"n\":2},{\"n\":3}]"),
                input("b", b"[]"),
                input("c", b"{\"n\":4}\n{\"n\":5}\n"),
            ],
            small(),
            1,
            |batch| {
                let numbers: Vec<u64> = batch.items.iter().map(|i| i.number).collect();
                seen.push(numbers);
            },
        )
        .unwrap();
        assert_eq!(seen, [vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(next, 6);
    }

    #[test]
    fn hands_on_the_items_before_an_error_then_fails() {
        let mut seen = Vec::new();
        let failed = for_each_batch(
            [input("a", b"[{\"n\":1},"), input("b", b"[]")],
            small(),
            7,
            |batch| seen.push(batch.items.len()),
        )
        .unwrap_err();
        assert_eq!(seen, [1]);
        assert!(failed.to_string().starts_with("a: "), "{failed}");
    }

    #[test]
    fn stops_when_told() {
        struct Two(usize);
        impl Batches for Two {
            fn take(&mut self, _batch: RawBatch) -> bool {
                self.0 += 1;
                self.0 < 2
            }
        }
        let mut two = Two(0);
        let driven = drive([input("a", b"[1,2,3,4,5,6,7]")], small(), 1, &mut two);
        assert!(matches!(driven, Driven::Stopped));
        assert_eq!(two.0, 2);
    }
}
