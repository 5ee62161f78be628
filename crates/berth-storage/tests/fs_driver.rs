//! The driver conformance suite against the filesystem driver.
#![allow(clippy::unwrap_used)]

mod suite;

use std::sync::Arc;

#[tokio::test]
async fn filesystem_driver_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let driver = berth_storage::FsDriver::new(dir.path()).unwrap();
    suite::run_all(Arc::new(driver), 5 * 1024 * 1024).await;
}
