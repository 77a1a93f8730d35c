//! Deciding, chunk by chunk, what a capture does with each part of a disk: skip it as a
//! hole, carry it over from the parent point, or read it. The host cuts a disk's stream
//! into fixed chunks aligned to the stream's offset, and both holes and carried ranges
//! must fall on those boundaries, so every range a source reports (allocated data, dirty
//! blocks) is first rounded out to whole chunks: a chunk with one byte of data is read,
//! a chunk with one dirty byte is read again. The last chunk of a disk may be short.

/// What to do with a run of whole chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Known zeros: append a hole.
    Hole {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// Unchanged since the parent point: carry the parent's chunks over.
    Carry {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
    /// Read from the source and store.
    Read {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        length: u64,
    },
}

impl Step {
    /// Where the run starts and how long it is.
    pub(crate) fn range(&self) -> (u64, u64) {
        match *self {
            Step::Hole { offset, length }
            | Step::Carry { offset, length }
            | Step::Read { offset, length } => (offset, length),
        }
    }
}

/// A part of a disk planned at once, with what the source reported about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    /// First byte, a multiple of `chunk`.
    pub(crate) start: u64,
    /// One past the last byte: a multiple of `chunk`, or the end of the disk.
    pub(crate) end: u64,
    /// The fixed chunk size, a power of two.
    pub(crate) chunk: u64,
    /// `(offset, length)` ranges that may hold data, in any order; the rest of the window
    /// is known to read as zeros. Ranges may reach outside the window.
    pub(crate) data: &'a [(u64, u64)],
    /// For an incremental capture, the `(offset, length)` ranges changed since the parent
    /// point; everything else is carried over. `None` reads every data chunk.
    pub(crate) dirty: Option<&'a [(u64, u64)]>,
    /// Longest read to plan, a multiple of `chunk`.
    pub(crate) max_read: u64,
}

/// Plans a window: steps covering `start..end` exactly, in order, each aligned to the
/// chunk size, neighbours of one kind merged and reads cut at `max_read`.
///
/// A chunk that is all zeros by the source's map is a hole even when it is clean: the
/// parent may have stored it as part of a longer hole, which cannot be carried piecewise.
pub(crate) fn plan(window: &Window<'_>) -> Vec<Step> {
    let Window {
        start,
        end,
        chunk,
        max_read,
        ..
    } = *window;
    if start >= end || chunk == 0 {
        return Vec::new();
    }
    let data = round_out(window.data, chunk, start, end);
    let dirty = window
        .dirty
        .map(|dirty| round_out(dirty, chunk, start, end));

    let mut cuts: Vec<u64> = vec![start, end];
    for &(s, e) in data.iter().chain(dirty.iter().flatten()) {
        cuts.push(s);
        cuts.push(e);
    }
    cuts.sort_unstable();
    cuts.dedup();

    let mut steps: Vec<Step> = Vec::new();
    for pair in cuts.windows(2) {
        let &[from, to] = pair else { continue };
        let length = to - from;
        let step = if !covers(&data, from) {
            Step::Hole {
                offset: from,
                length,
            }
        } else if dirty.as_ref().is_some_and(|dirty| !covers(dirty, from)) {
            Step::Carry {
                offset: from,
                length,
            }
        } else {
            Step::Read {
                offset: from,
                length,
            }
        };
        push_merged(&mut steps, step);
    }
    split_reads(steps, max_read.max(chunk))
}

/// Clips ranges to `start..end`, widens them to chunk boundaries (the end at most to
/// `end`), and sorts and merges them into disjoint, non-touching spans `(start, end)`.
fn round_out(ranges: &[(u64, u64)], chunk: u64, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = ranges
        .iter()
        .filter_map(|&(offset, length)| {
            let from = offset.max(start);
            let to = offset.saturating_add(length).min(end);
            if from >= to {
                return None;
            }
            // `start` is chunk aligned, so rounding down stays inside the window.
            let from = from - from % chunk;
            let to = to
                .div_ceil(chunk)
                .checked_mul(chunk)
                .unwrap_or(end)
                .min(end);
            Some((from, to))
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (from, to) in spans {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// Whether the sorted, disjoint `spans` hold `at`.
fn covers(spans: &[(u64, u64)], at: u64) -> bool {
    let index = spans.partition_point(|&(_, to)| to <= at);
    spans.get(index).is_some_and(|&(from, _)| from <= at)
}

/// Appends a step, extending the last one if it is of the same kind and touches it.
fn push_merged(steps: &mut Vec<Step>, step: Step) {
    if let Some(last) = steps.last_mut() {
        let (last_offset, last_length) = last.range();
        let (offset, length) = step.range();
        if last_offset + last_length == offset {
            let merged = last_length + length;
            match (last, step) {
                (Step::Hole { length, .. }, Step::Hole { .. })
                | (Step::Carry { length, .. }, Step::Carry { .. })
                | (Step::Read { length, .. }, Step::Read { .. }) => {
                    *length = merged;
                    return;
                }
                _ => {}
            }
        }
    }
    steps.push(step);
}

/// Cuts reads longer than `max_read` into pieces of `max_read` (the last one shorter).
fn split_reads(steps: Vec<Step>, max_read: u64) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            Step::Read { offset, length } if length > max_read => {
                let end = offset + length;
                let mut at = offset;
                while at < end {
                    let piece = max_read.min(end - at);
                    out.push(Step::Read {
                        offset: at,
                        length: piece,
                    });
                    at += piece;
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 4096;

    fn hole(offset: u64, length: u64) -> Step {
        Step::Hole { offset, length }
    }
    fn carry(offset: u64, length: u64) -> Step {
        Step::Carry { offset, length }
    }
    fn read(offset: u64, length: u64) -> Step {
        Step::Read { offset, length }
    }

    fn window<'a>(
        start: u64,
        end: u64,
        data: &'a [(u64, u64)],
        dirty: Option<&'a [(u64, u64)]>,
    ) -> Window<'a> {
        Window {
            start,
            end,
            chunk: K,
            data,
            dirty,
            max_read: 4 * K,
        }
    }

    #[test]
    fn all_data_is_read_in_pieces() {
        let steps = plan(&window(0, 10 * K, &[(0, 10 * K)], None));
        assert_eq!(
            steps,
            [read(0, 4 * K), read(4 * K, 4 * K), read(8 * K, 2 * K)]
        );
    }

    #[test]
    fn empty_windows_and_zero_disks_are_holes() {
        assert_eq!(plan(&window(0, 8 * K, &[], None)), [hole(0, 8 * K)]);
        assert_eq!(plan(&window(8 * K, 8 * K, &[], None)), []);
    }

    #[test]
    fn data_rounds_out_to_chunks() {
        // One byte in chunk 1 and a range straddling chunks 3 and 4.
        let data = [(K + 7, 1), (3 * K + 100, K)];
        let steps = plan(&window(0, 6 * K, &data, None));
        assert_eq!(
            steps,
            [
                hole(0, K),
                read(K, K),
                hole(2 * K, K),
                read(3 * K, 2 * K),
                hole(5 * K, K)
            ]
        );
    }

    #[test]
    fn the_last_chunk_may_be_short() {
        let end = 3 * K + 10;
        let steps = plan(&window(0, end, &[(3 * K, 10)], None));
        assert_eq!(steps, [hole(0, 3 * K), read(3 * K, 10)]);
        let steps = plan(&window(0, end, &[(0, u64::MAX)], None));
        assert_eq!(steps, [read(0, end)]);
    }

    #[test]
    fn ranges_outside_the_window_are_clipped() {
        let data = [(0, 5 * K), (9 * K, 4 * K), (u64::MAX - 1, 5)];
        let steps = plan(&window(4 * K, 10 * K, &data, None));
        assert_eq!(steps, [read(4 * K, K), hole(5 * K, 4 * K), read(9 * K, K)]);
    }

    #[test]
    fn unsorted_and_overlapping_ranges_merge() {
        let data = [(5 * K, K), (0, 2 * K), (K, 2 * K), (3 * K, 1)];
        let steps = plan(&window(0, 8 * K, &data, None));
        assert_eq!(
            steps,
            [
                read(0, 4 * K),
                hole(4 * K, K),
                read(5 * K, K),
                hole(6 * K, 2 * K)
            ]
        );
    }

    #[test]
    fn clean_data_is_carried_and_dirty_data_read() {
        let data = [(0, 8 * K)];
        // A dirty byte in chunk 2, and chunks 5 and 6 dirty.
        let dirty = [(2 * K + 1, 1), (5 * K, 2 * K)];
        let steps = plan(&window(0, 8 * K, &data, Some(&dirty)));
        assert_eq!(
            steps,
            [
                carry(0, 2 * K),
                read(2 * K, K),
                carry(3 * K, 2 * K),
                read(5 * K, 2 * K),
                carry(7 * K, K)
            ]
        );
    }

    #[test]
    fn zero_chunks_are_holes_whether_clean_or_dirty() {
        let data = [(2 * K, 2 * K)];
        let dirty = [(0, K), (3 * K, 3 * K)];
        let steps = plan(&window(0, 8 * K, &data, Some(&dirty)));
        assert_eq!(
            steps,
            [
                hole(0, 2 * K),
                carry(2 * K, K),
                read(3 * K, K),
                hole(4 * K, 4 * K)
            ]
        );
        // Nothing dirty: every data chunk is carried.
        let steps = plan(&window(0, 4 * K, &[(0, 4 * K)], Some(&[])));
        assert_eq!(steps, [carry(0, 4 * K)]);
    }

    #[test]
    fn steps_cover_the_window_in_order() {
        let data = [(K, 3), (7 * K, 9 * K), (20 * K, 1)];
        let dirty = [(8 * K, 1), (12 * K, 100)];
        let steps = plan(&window(0, 21 * K + 5, &data, Some(&dirty)));
        let mut at = 0;
        for step in &steps {
            let (offset, length) = step.range();
            assert_eq!(offset, at);
            assert!(length > 0);
            assert_eq!(offset % K, 0);
            at += length;
        }
        assert_eq!(at, 21 * K + 5);
    }
}
