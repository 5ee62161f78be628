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

/// A session's age is that of its newest file, the rule purging shares with collection and
/// `check`: one started long ago that received a chunk just now is still moving and kept.
#[tokio::test]
async fn a_session_still_receiving_chunks_is_not_purged() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let moving = reg.start_upload(&repo).await.unwrap();
    let abandoned = reg.start_upload(&repo).await.unwrap();
    let status = std::process::Command::new("find")
        .arg(dir.path())
        .args(["-exec", "touch", "-h", "-d", "2 hours ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
    let chunk: berth_registry::ByteStream = Box::pin(futures_util::stream::once(async {
        Ok(bytes::Bytes::from_static(b"a chunk"))
    }));
    reg.append_chunk(&repo, &moving.id, None, chunk)
        .await
        .unwrap();

    let report = reg
        .purge_uploads(Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!(
        report.purged,
        vec![format!("team/app/{}", abandoned.id.as_str())]
    );
    assert_eq!(reg.upload_status(&repo, &moving.id).await.unwrap().size, 7);
}
