//! The NBD server alone: the block status queries and reads a backup over NBD needs, made
//! by a native client with the plugin's own NBD library and pipelining, storing nothing.
//!
//! Whatever a backup does with the bytes, the server has to find and send them first, and
//! on a machine shared with the server it competes with the backup for the same cores.
//! The time this client takes is therefore the floor of any backup of the same export on
//! the same machine, and sets the backups' figures in proportion.

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use tessera_nbd::Client;

use crate::{Failure, Result};

/// The meta contexts the plugin asks for.
const ALLOCATION: &str = "base:allocation";

/// Bytes of reads queued at once, and how many such groups are in flight: as the
/// vm-disk plugin reads.
const GROUP_BYTES: u64 = 2 << 20;
const GROUPS_AHEAD: usize = 3;

/// What a backup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Every allocated byte: a full backup.
    Allocated,
    /// The blocks the dirty bitmap marks: an incremental backup.
    Dirty,
}

/// Connects to the export `export` on `port` of the loopback interface, asks for the
/// block status a backup of `wanted` needs over the whole export, and reads those bytes.
/// Returns the time taken from connecting to the last byte, and the bytes read.
pub fn read_export(
    port: u16,
    export: &str,
    bitmap: &str,
    wanted: Wanted,
) -> Result<(Duration, u64)> {
    let failed = |step: &str, e: &dyn std::fmt::Display| {
        Failure::new(format!("native NBD client: {step}: {e}"))
    };
    let dirty_context = format!("qemu:dirty-bitmap:{bitmap}");
    let start = Instant::now();
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .map_err(|e| failed("cannot connect to qemu-nbd", &e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| failed("cannot set TCP_NODELAY", &e))?;
    let mut client = Client::connect(stream, export, &[ALLOCATION, &dirty_context])
        .map_err(|e| failed("cannot connect to the export", &e))?;
    let size = client.size();
    let runs: Vec<(u64, u64)> = match wanted {
        Wanted::Allocated => client
            .allocation(0, size)
            .map_err(|e| failed("block status", &e))?
            .into_iter()
            .filter(|extent| extent.data)
            .map(|extent| (extent.offset, extent.length))
            .collect(),
        Wanted::Dirty => client
            .dirty(&dirty_context, 0, size)
            .map_err(|e| failed("dirty bitmap", &e))?,
    };
    let groups = groups(&runs);
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut next = groups.iter();
    let mut queued = 0;
    let mut bytes = 0u64;
    loop {
        while queued < GROUPS_AHEAD {
            let Some(group) = next.next() else { break };
            client
                .queue_read(group, spare.pop().unwrap_or_default())
                .map_err(|e| failed("read", &e))?;
            queued += 1;
        }
        if queued == 0 {
            break;
        }
        let read = client.take_read().map_err(|e| failed("read", &e))?;
        queued -= 1;
        bytes += read.len() as u64;
        spare.push(read);
    }
    let elapsed = start.elapsed();
    client
        .disconnect()
        .map_err(|e| failed("cannot disconnect", &e))?;
    Ok((elapsed, bytes))
}

/// `runs` cut into groups of reads of at most [`GROUP_BYTES`] together, in order.
fn groups(runs: &[(u64, u64)]) -> Vec<Vec<(u64, u64)>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut group_bytes = 0;
    for &(offset, length) in runs {
        let mut at = offset;
        let end = offset + length;
        while at < end {
            let piece = (end - at).min(GROUP_BYTES - group_bytes);
            group.push((at, piece));
            group_bytes += piece;
            at += piece;
            if group_bytes == GROUP_BYTES {
                groups.push(std::mem::take(&mut group));
                group_bytes = 0;
            }
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_hold_every_byte_once_and_at_most_the_group_size() {
        let runs = [(0, 3 << 20), (8 << 20, 64 << 10), (9 << 20, 1 << 20)];
        let groups = groups(&runs);
        for group in &groups {
            let bytes: u64 = group.iter().map(|(_, len)| len).sum();
            assert!(bytes <= GROUP_BYTES);
        }
        let pieces: Vec<(u64, u64)> = groups.concat();
        assert_eq!(
            pieces,
            [
                (0, 2 << 20),
                (2 << 20, 1 << 20),
                (8 << 20, 64 << 10),
                (9 << 20, (1 << 20) - (64 << 10)),
                ((10 << 20) - (64 << 10), 64 << 10),
            ]
        );
        assert_eq!(groups.len(), 3);
        assert!(super::groups(&[]).is_empty());
    }
}
