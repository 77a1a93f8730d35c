//! Compressed qcow2 clusters. Each holds one whole guest cluster, compressed on its own with
//! the image's compression type: raw deflate (no zlib header or checksum, as QEMU writes it)
//! or Zstandard frames. The descriptor gives only an upper bound of the compressed length,
//! rounded up to 512-byte sectors, so decoding stops as soon as a full cluster is out and
//! ignores what follows (often the start of the next compressed cluster).

use std::io::Read;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

use super::header::Compression;

/// Largest Zstandard window accepted. A frame declares its window and the decoder reserves
/// that much; QEMU compresses one cluster (at most 2 MiB) per frame, so its windows are at
/// most that, and the limit stops a crafted frame from claiming gigabytes.
const MAX_ZSTD_WINDOW: u64 = 16 << 20;

/// Decoder state kept between clusters, so that reading a compressed image does not
/// allocate a fresh window per cluster.
#[derive(Default)]
pub(crate) struct Decompressor {
    deflate: Option<Box<DecompressorOxide>>,
    zstd: Option<FrameDecoder>,
}

impl Decompressor {
    /// Decompresses `input` until `out` is full. Fails (with the decoder's reason) if the
    /// stream is malformed or ends before `out` is full.
    pub(crate) fn decompress_cluster(
        &mut self,
        compression: Compression,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(), String> {
        match compression {
            Compression::Zlib => {
                let state = self.deflate.get_or_insert_with(Box::default);
                state.init();
                inflate_raw(state, input, out)
            }
            Compression::Zstd => {
                let frames = self.zstd.get_or_insert_with(|| {
                    let mut frames = FrameDecoder::new();
                    frames.set_max_window_size(MAX_ZSTD_WINDOW);
                    frames
                });
                unzstd(frames, input, out)
            }
        }
    }
}

fn inflate_raw(state: &mut DecompressorOxide, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    // All the input is there; the output buffer is the whole cluster and never wraps.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(state, input, out, 0, flags);
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == out.len() => Ok(()),
        TINFLStatus::Done => Err(format!(
            "the deflate stream ends after {written} of {} bytes",
            out.len()
        )),
        other => Err(format!(
            "deflate failed ({other:?}) after {written} of {} bytes",
            out.len()
        )),
    }
}

fn unzstd(frames: &mut FrameDecoder, mut input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut filled = 0;
    // QEMU writes one frame per cluster but reads on across frame boundaries; so do we. Each
    // frame consumes its header, so the loop ends when the input does.
    while filled < out.len() {
        let mut frame = StreamingDecoder::new_with_decoder(&mut input, &mut *frames)
            .map_err(|e| format!("zstd frame after {filled} bytes: {e}"))?;
        while let Some(rest) = out.get_mut(filled..).filter(|r| !r.is_empty()) {
            let n = frame
                .read(rest)
                .map_err(|e| format!("zstd data after {filled} bytes: {e}"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_input_fail_cleanly() {
        let mut out = vec![0u8; 4096];
        let mut d = Decompressor::default();
        for compression in [Compression::Zlib, Compression::Zstd] {
            assert!(d.decompress_cluster(compression, &[], &mut out).is_err());
            assert!(
                d.decompress_cluster(compression, &[0xff; 100], &mut out)
                    .is_err()
            );
        }
    }

    #[test]
    fn stored_deflate_blocks_decode_and_trailing_bytes_are_ignored() {
        // A final stored block: BFINAL=1 BTYPE=00, LEN, NLEN, then the bytes.
        let mut stream = vec![0x01, 0x04, 0x00, 0xfb, 0xff, 1, 2, 3, 4];
        stream.extend_from_slice(&[0xaa; 7]);
        let mut d = Decompressor::default();
        let mut out = [0u8; 4];
        d.decompress_cluster(Compression::Zlib, &stream, &mut out)
            .unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        let mut longer = [0u8; 5];
        assert!(
            d.decompress_cluster(Compression::Zlib, &stream, &mut longer)
                .is_err()
        );
        // The state is reset between clusters.
        d.decompress_cluster(Compression::Zlib, &stream, &mut out)
            .unwrap();
    }
}
