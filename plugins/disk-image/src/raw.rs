//! Raw images: the file's bytes are the guest's bytes. Which ranges are holes only the host
//! knows (it asks the file system with `SEEK_DATA`/`SEEK_HOLE`); the caller passes the data
//! ranges it was given, and everything else maps as known zeros.

use crate::error::{ImageError, ImageErrorKind};
use crate::image::{DiskImage, ExtentList, Run, Stored, check_range, push_run};
use crate::{Extent, ExtentKind, Format, ReadAt};

/// A raw disk image over a [`ReadAt`] source.
#[derive(Debug)]
pub struct Raw<R> {
    reader: R,
    name: String,
    /// Sorted, disjoint, non-adjacent `(start, end)` ranges holding data, clipped to the
    /// file; `None` when the whole file is data.
    data: Option<Vec<(u64, u64)>>,
}

impl<R: ReadAt> Raw<R> {
    /// A raw image named `name` (for messages). `data_ranges` lists the `(offset, length)`
    /// ranges the host reported as holding data, in any order, possibly overlapping; the rest
    /// of the file maps as holes. `None` maps the whole file as data.
    pub fn new(reader: R, name: impl Into<String>, data_ranges: Option<Vec<(u64, u64)>>) -> Self {
        let len = reader.len();
        let data = data_ranges.map(|ranges| normalize(ranges, len));
        Raw {
            reader,
            name: name.into(),
            data,
        }
    }

    /// Unwraps the source.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Sorts, clips to `len` and merges overlapping or touching ranges.
fn normalize(ranges: Vec<(u64, u64)>, len: u64) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = ranges
        .into_iter()
        .map(|(start, length)| (start.min(len), start.saturating_add(length).min(len)))
        .filter(|(start, end)| start < end)
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

impl<R: ReadAt> DiskImage for Raw<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn virtual_size(&self) -> u64 {
        self.reader.len()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        let length = <[u8]>::len(buf) as u64;
        check_range(&self.name, offset, length, self.reader.len())?;
        self.reader.read_exact_at(offset, buf).map_err(|cause| {
            ImageError::new(
                &self.name,
                ImageErrorKind::Io {
                    offset,
                    length,
                    cause,
                },
            )
        })
    }

    fn map(&mut self, offset: u64, length: u64) -> Result<Vec<Extent>, ImageError> {
        check_range(&self.name, offset, length, self.reader.len())?;
        let end = offset + length;
        let mut list = ExtentList::default();
        let Some(data) = &self.data else {
            list.push(offset, length, ExtentKind::Data);
            return Ok(list.into_vec());
        };
        let first = data.partition_point(|&(_, e)| e <= offset);
        let mut pos = offset;
        for &(start, stop) in data.get(first..).unwrap_or_default() {
            if start >= end {
                break;
            }
            let start = start.max(pos);
            list.push(pos, start - pos, ExtentKind::Zero);
            let stop = stop.min(end);
            list.push(start, stop - start, ExtentKind::Data);
            pos = stop;
        }
        list.push(pos, end - pos, ExtentKind::Zero);
        Ok(list.into_vec())
    }

    fn runs(&mut self, offset: u64, length: u64) -> Result<Vec<Run>, ImageError> {
        check_range(&self.name, offset, length, self.reader.len())?;
        let mut runs = Vec::new();
        push_run(&mut runs, offset, length, Stored::InFile(offset));
        Ok(runs)
    }

    fn describe(&self) -> String {
        let holes = match &self.data {
            Some(d) => format!(", {} data ranges", d.len()),
            None => String::new(),
        };
        format!(
            "raw image {}: {} bytes{holes}",
            self.name,
            self.reader.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(extents: &[Extent]) -> Vec<(u64, u64, ExtentKind)> {
        extents
            .iter()
            .map(|e| (e.offset, e.length, e.kind))
            .collect()
    }

    #[test]
    fn ranges_are_sorted_clipped_and_merged() {
        assert_eq!(
            normalize(
                vec![(50, 10), (0, 10), (5, 10), (15, 5), (95, 100), (200, 1)],
                100
            ),
            vec![(0, 20), (50, 60), (95, 100)]
        );
        assert_eq!(normalize(vec![(u64::MAX, u64::MAX)], 100), vec![]);
    }

    #[test]
    fn map_reports_holes_between_data_ranges() {
        let mut raw = Raw::new(vec![7u8; 100], "r", Some(vec![(10, 10), (50, 10)]));
        use ExtentKind::*;
        assert_eq!(
            kinds(&raw.map(0, 100).unwrap()),
            vec![
                (0, 10, Zero),
                (10, 10, Data),
                (20, 30, Zero),
                (50, 10, Data),
                (60, 40, Zero)
            ]
        );
        assert_eq!(
            kinds(&raw.map(15, 40).unwrap()),
            vec![(15, 5, Data), (20, 30, Zero), (50, 5, Data)]
        );
        assert_eq!(raw.map(30, 0).unwrap(), vec![]);
        assert!(raw.map(90, 11).is_err());
        let mut whole = Raw::new(vec![7u8; 100], "r", None);
        assert_eq!(kinds(&whole.map(3, 4).unwrap()), vec![(3, 4, Data)]);
    }

    #[test]
    fn reads_past_the_end_are_refused() {
        let mut raw = Raw::new(vec![7u8; 100], "r", None);
        let mut buf = [0u8; 10];
        raw.read_at(90, &mut buf).unwrap();
        assert_eq!(buf, [7; 10]);
        let err = raw.read_at(91, &mut buf).unwrap_err();
        assert!(
            matches!(err.kind(), ImageErrorKind::OutOfRange { .. }),
            "{err}"
        );
    }
}
