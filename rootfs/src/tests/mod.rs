//! Tests that need root and the real kernel: unpacking layers (device
//! nodes, ownership, trusted xattrs), mounting them with overlayfs in a
//! private mount namespace, and the registry on disk.

mod extract;
mod fixture;
mod hostile;
mod import;
mod registry;
