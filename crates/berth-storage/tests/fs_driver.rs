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

/// The filesystem is the driver whose listings are cached by stamp: it must give them.
#[tokio::test]
async fn filesystem_driver_stamps_settled_directories() {
    let dir = tempfile::tempdir().unwrap();
    let d = berth_storage::FsDriver::new(dir.path()).unwrap();
    let path = suite::p("a/b");
    berth_storage::StorageDriver::put(&d, &path, bytes::Bytes::from_static(b"x"))
        .await
        .unwrap();
    let dirs = [suite::p("a")];
    let fresh = berth_storage::StorageDriver::list_stamped(&d, &dirs).await;
    assert_eq!(
        fresh[0].as_ref().unwrap().stamp.is_some(),
        d.fine_stamps(),
        "a directory changed a moment ago is stamped only where the kernel's times are fine-grained: \
         elsewhere a change in the same clock tick would go unseen"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let settled = berth_storage::StorageDriver::list_stamped(&d, &dirs).await;
    assert!(settled[0].as_ref().unwrap().stamp.is_some());
}
