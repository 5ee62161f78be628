//! The driver conformance suite against a real S3 server (Garage in CI, started by
//! `scripts/garage.sh`), found through `BERTH_TEST_S3_*` variables (`scripts/garage.sh env`
//! prints them). Without them the test is skipped, except under `CI=true`, where it fails:
//! CI must never pass by not testing S3.
#![allow(clippy::unwrap_used)]

mod suite;

use std::sync::Arc;

use berth_storage::{S3Driver, S3Options};

fn options() -> Option<S3Options> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(endpoint) = var("BERTH_TEST_S3_ENDPOINT") else {
        assert!(
            var("CI").as_deref() != Some("true"),
            "CI=true but BERTH_TEST_S3_ENDPOINT is not set: start Garage with scripts/garage.sh"
        );
        eprintln!("skipped: set BERTH_TEST_S3_* (eval \"$(scripts/garage.sh env)\")");
        return None;
    };
    Some(S3Options {
        region: var("BERTH_TEST_S3_REGION").unwrap_or_else(|| "garage".into()),
        bucket: var("BERTH_TEST_S3_BUCKET").expect("BERTH_TEST_S3_BUCKET"),
        endpoint: Some(endpoint),
        credentials: Some((
            var("BERTH_TEST_S3_ACCESS_KEY").expect("BERTH_TEST_S3_ACCESS_KEY"),
            var("BERTH_TEST_S3_SECRET_KEY").expect("BERTH_TEST_S3_SECRET_KEY"),
        )),
        // Every run in its own prefix, so runs never see each other's keys.
        root_directory: format!("/suite/{}", uuid::Uuid::new_v4()),
        force_path_style: true,
        chunk_size: 5 * 1024 * 1024,
        secure: false,
        // Low, so moves above 5 MiB take the multipart-copy path.
        multipart_copy_threshold: 5 * 1024 * 1024,
        redirect: true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_driver_passes_the_suite() {
    let Some(options) = options() else { return };
    let driver = S3Driver::new(options).await.unwrap();
    suite::run_all(Arc::new(driver), 5 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_presigned_urls_serve_the_object() {
    use berth_storage::StorageDriver;
    let Some(options) = options() else { return };
    let driver = S3Driver::new(options).await.unwrap();
    let path = suite::p("r/blob");
    driver
        .put(&path, bytes::Bytes::from_static(b"redirected"))
        .await
        .unwrap();
    assert!(driver.redirects());
    let url = driver.redirect_url(&path).await.unwrap().unwrap();
    let body = std::process::Command::new("curl")
        .args(["-fsS", &url])
        .output()
        .unwrap();
    assert!(
        body.status.success(),
        "{}",
        String::from_utf8_lossy(&body.stderr)
    );
    assert_eq!(body.stdout, b"redirected");
}
