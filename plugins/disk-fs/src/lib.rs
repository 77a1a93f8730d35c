//! Read-only views of partition tables (MBR, GPT) and file systems (ext2/3/4, FAT) inside a disk image, read by random access.
