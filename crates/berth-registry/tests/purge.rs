//! Upload purging (`storage.maintenance.uploadpurging`) on a real filesystem.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a failed test.

use std::sync::Arc;
use std::time::Duration;

use berth_oci::RepoName;
use berth_registry::{Error, Options, Registry};
use berth_storage::FsDriver;

fn registry(dir: &std::path::Path) -> Registry {
    Registry::new(Arc::new(FsDriver::new(dir).unwrap()), Options::default())
}

#[tokio::test]
async fn old_sessions_are_purged_and_young_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let old = reg.start_upload(&repo).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let young = reg.start_upload(&repo).await.unwrap();

    // Dry run: reports, removes nothing.
    let report = reg
        .purge_uploads(Duration::from_secs(1), true)
        .await
        .unwrap();
    assert_eq!(report.purged, vec![format!("team/app/{}", old.id.as_str())]);
    assert!(reg.upload_status(&repo, &old.id).await.is_ok());

    let report = reg
        .purge_uploads(Duration::from_secs(1), false)
        .await
        .unwrap();
    assert_eq!(report.purged.len(), 1);
    assert!(matches!(
        reg.upload_status(&repo, &old.id).await,
        Err(Error::UploadUnknown)
    ));
    assert!(reg.upload_status(&repo, &young.id).await.is_ok());
}

#[tokio::test]
async fn purging_an_empty_root_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let report = registry(dir.path())
        .purge_uploads(Duration::ZERO, false)
        .await
        .unwrap();
    assert!(report.purged.is_empty());
}
