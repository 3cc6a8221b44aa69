//! A string column of a batch, built straight into the three buffers of an Arrow `StringArray`.
//!
//! Text cells are most of every table, and arrow's `StringBuilder` copies each value through a
//! call to the C library's memcpy, which for values this short (ids, keys, flags) costs more
//! than the copy itself. This builder appends with [`append_bytes`], as the CSV side does, and
//! hands its buffers to the array without copying them again.

use std::sync::Arc;

use arrow_array::{ArrayRef, StringArray};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};

use super::csv_text::append_bytes;

/// The values of one string column so far.
pub(super) struct TextColumn {
    /// Every value's UTF-8 bytes, one after the other.
    values: Vec<u8>,
    /// Where each value ends in `values`, after a leading 0: one more than there are rows.
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl TextColumn {
    /// An empty column with room for `rows` values of `bytes` bytes in all.
    pub(super) fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TextColumn {
            values: Vec::with_capacity(bytes),
            offsets,
            nulls: NullBufferBuilder::new(rows),
        }
    }

    /// Rows so far.
    pub(super) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Bytes of values so far.
    pub(super) fn value_bytes(&self) -> usize {
        self.values.len()
    }

    /// Appends one value; `None` is null.
    #[inline]
    pub(super) fn append(&mut self, value: Option<&str>) {
        match value {
            Some(text) => {
                append_bytes(&mut self.values, text.as_bytes());
                self.nulls.append_non_null();
            }
            None => self.nulls.append_null(),
        }
        // A batch holds at most --max-item-bytes per item and a few MiB in all; arrow's own
        // builder panics the same way past 2 GiB.
        let end = i32::try_from(self.values.len()).expect("byte array offset overflow");
        self.offsets.push(end);
    }

    /// The column as an array; the builder is left empty, with room for `rows` values of
    /// `bytes` bytes in all (the caller sizes it from this batch).
    pub(super) fn finish(&mut self, rows: usize, bytes: usize) -> ArrayRef {
        let next = TextColumn::with_capacity(rows, bytes);
        let TextColumn {
            values,
            offsets,
            mut nulls,
        } = std::mem::replace(self, next);
        // SAFETY: `offsets` starts at 0, never decreases (each value only adds bytes) and ends
        // at `values.len()`; every value was a whole `&str`, so `values` is UTF-8 and every
        // offset falls on a character boundary; `nulls` has one bit per row. These are exactly
        // the invariants `new_unchecked` leaves to the caller.
        let array = unsafe {
            let offsets = OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets));
            StringArray::new_unchecked(offsets, Buffer::from_vec(values), nulls.finish())
        };
        Arc::new(array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn builds_the_array_arrow_would() {
        let cells = [
            Some("a"),
            None,
            Some(""),
            Some("ünï 東京 and a longer tail of text"),
            None,
        ];
        let mut column = TextColumn::with_capacity(1, 1);
        for _ in 0..2 {
            for cell in cells {
                column.append(cell);
            }
            let (rows, bytes) = (column.len(), column.value_bytes());
            assert_eq!(rows, cells.len());
            let built = column.finish(rows, bytes);
            let expected = StringArray::from(cells.to_vec());
            let built = built.as_any().downcast_ref::<StringArray>().unwrap();
            built.to_data().validate_full().unwrap();
            assert_eq!(built, &expected);
            assert_eq!(built.null_count(), 2);
            // The builder starts again empty, and the second round must equal the first.
            assert_eq!(column.len(), 0);
        }
    }

    #[test]
    fn a_column_without_nulls_has_no_null_buffer() {
        let mut column = TextColumn::with_capacity(4, 16);
        column.append(Some("x"));
        column.append(Some("y"));
        let array = column.finish(4, 16);
        assert!(array.nulls().is_none());
        assert_eq!(array.len(), 2);
    }
}
