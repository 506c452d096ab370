//! A target made ready once at startup: its URI, credentials and headers.

use super::*;

impl Endpoint {
    pub(super) fn new(
        target: &TargetConfig,
        proxies: &hyper_util::client::proxy::matcher::Matcher,
        metrics: &Metrics,
    ) -> Result<Endpoint, BadTarget> {
        let bad = || BadTarget(target.name.to_string());
        // URL credentials become a basic-auth header once, here (a token
        // wins over them), leaving each attempt a clean URL and a ready header.
        let mut url = target.url.clone();
        let credentials = url_credentials(&mut url);
        let authorization = match (&target.token, credentials) {
            (Some(t), _) => Some(format!("Bearer {}", t.expose())),
            (None, Some((user, password))) => {
                use base64::Engine as _;
                let pair = format!("{user}:{}", password.unwrap_or_default());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, None) => None,
        };
        let authorization = match authorization {
            Some(v) => {
                let mut v = HeaderValue::from_str(&v).map_err(|_| bad())?;
                // hyper never prints a sensitive value.
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad());
        }
        let uri: Uri = url.as_str().parse().map_err(|_| bad())?;
        Ok(Endpoint {
            name: target.name.clone(),
            url,
            proxy_authorization: proxy::proxy_authorization(proxies, &uri),
            uri,
            authorization,
            body: target.body,
            limiter: target.rate_limit.map(RateLimiter::per_second),
            metrics: metrics.target(&target.name),
        })
    }
}

/// Takes the user and password out of `url`, percent-decoded (what a client
/// sends as basic auth for `http://user:password@host/`).
pub(super) fn url_credentials(url: &mut url::Url) -> Option<(String, Option<String>)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let user = decode(url.username())?;
    let password = url.password().and_then(decode);
    if user.is_empty() && password.is_none() {
        return None;
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some((user, password))
}
