//! A blocking NBD client: fixed newstyle handshake, structured replies, block status with base:allocation and qemu dirty bitmaps.
