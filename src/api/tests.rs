use super::{endpoint::url_credentials, *};
use crate::metrics::Metrics;
use requests::test_message as message;

#[test]
fn url_credentials_are_taken_out_percent_decoded() {
    let mut url = url::Url::parse("http://us%40er:p%3Ass@api.test:8080/x?q=1").unwrap();
    assert_eq!(
        url_credentials(&mut url),
        Some(("us@er".to_owned(), Some("p:ss".to_owned())))
    );
    assert_eq!(url.as_str(), "http://api.test:8080/x?q=1");
    let mut url = url::Url::parse("http://only@api.test/").unwrap();
    assert_eq!(url_credentials(&mut url), Some(("only".to_owned(), None)));
    let mut url = url::Url::parse("https://api.test/").unwrap();
    assert_eq!(url_credentials(&mut url), None);
}

#[tokio::test]
async fn a_url_password_stays_out_of_the_error() {
    let cfg = crate::config::RawConfig::from_vars([
        (
            "BRIDGE_USER_API_URL".to_owned(),
            "http://user:hunter2@127.0.0.1:1/x".to_owned(),
        ),
        (
            "BRIDGE_LOG_API_URL".to_owned(),
            "http://127.0.0.1:1/y".to_owned(),
        ),
        ("BRIDGE_MAX_ATTEMPTS".to_owned(), "1".to_owned()),
    ])
    .worker_config()
    .unwrap();
    let api = ApiClient::new(&cfg, &Metrics::new()).unwrap();
    let msg = message("id", None);
    let requests = api.requests(&msg, b"{}", "e").unwrap();
    let report = api.call(&api.endpoints()[0], &requests).await;
    let CallOutcome::Failed(f) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(f.last_error.starts_with("connection failed"), "{f:?}");
    assert!(!format!("{f:?} {api:?}").contains("hunter2"), "{f:?}");
    assert_eq!(scrub("a hunter2 b".into(), &cfg.targets[0].url), "a *** b");
    assert_eq!(api.endpoints()[0].uri, "http://127.0.0.1:1/x");
    let endpoint = &api.endpoints()[0];
    assert_eq!(endpoint.url.as_str(), "http://127.0.0.1:1/x");
    let auth = endpoint.authorization.as_ref().unwrap();
    assert_eq!(auth.to_str().unwrap(), "Basic dXNlcjpodW50ZXIy");
    assert!(auth.is_sensitive());
}
