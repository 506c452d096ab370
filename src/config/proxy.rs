//! Proxies for the APIs, from the variables curl reads: `HTTPS_PROXY` for
//! `https://` targets, `HTTP_PROXY` for `http://` targets, `ALL_PROXY` for
//! either when its own is unset, `NO_PROXY` for the hosts that go direct;
//! each also in lower case (upper case wins unless it is empty). Only `http://` proxies (or a
//! bare `host:port`); a value that is not one exits 2 naming the variable,
//! rather than being skipped and the target called directly.

use std::{collections::BTreeMap, fmt};

use hyper_util::client::proxy::matcher::Matcher;

use super::ConfigError;

/// Every variable read here, in the order each pair is looked up.
pub const VARIABLES: [&str; 9] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    // Under CGI, `HTTP_PROXY` can come from a request header ("httpoxy"):
    // then no proxy variable is trusted (curl, reqwest and hyper-util agree).
    "REQUEST_METHOD",
];

/// The proxy settings found, as (variable, value).
#[derive(Clone, Default)]
pub struct ProxyConfig {
    all: Option<(&'static str, String)>,
    http: Option<(&'static str, String)>,
    https: Option<(&'static str, String)>,
    no: String,
}

impl fmt::Debug for ProxyConfig {
    /// Which variables are used, not their values (they may hold a
    /// password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |v: &Option<(&'static str, String)>| v.as_ref().map(|(n, _)| *n);
        f.debug_struct("ProxyConfig")
            .field("all", &name(&self.all))
            .field("http", &name(&self.http))
            .field("https", &name(&self.https))
            .field("no_proxy", &self.no)
            .finish()
    }
}

impl ProxyConfig {
    /// Reads the variables from `vars` (the ones in [`VARIABLES`]).
    ///
    /// # Errors
    /// Each set proxy variable that is not an `http://` proxy, named,
    /// without its value.
    pub fn read(vars: &BTreeMap<String, String>) -> Result<ProxyConfig, ConfigError> {
        if vars.contains_key("REQUEST_METHOD") {
            return Ok(ProxyConfig::default());
        }
        // An empty value counts as unset, as curl's getenv does: `NO_PROXY=`
        // left behind by a wrapper script must not hide the `no_proxy` that
        // names the hosts to reach directly (nor `HTTPS_PROXY=` its pair).
        let first = |upper: &'static str, lower: &'static str| {
            [upper, lower].into_iter().find_map(|name| {
                vars.get(name)
                    .map(|v| (name, v.trim().to_owned()))
                    .filter(|(_, v)| !v.is_empty())
            })
        };
        let config = ProxyConfig {
            all: first("ALL_PROXY", "all_proxy"),
            http: first("HTTP_PROXY", "http_proxy"),
            https: first("HTTPS_PROXY", "https_proxy"),
            no: first("NO_PROXY", "no_proxy")
                .map(|(_, v)| v)
                .unwrap_or_default(),
        };
        let problems: Vec<String> = [&config.all, &config.http, &config.https]
            .into_iter()
            .flatten()
            .filter(|(_, value)| !is_http_proxy(value))
            .map(|(name, _)| {
                format!(
                    "{name} is not valid: only an http:// proxy is supported \
                     (http://[user:password@]host:port, or host:port)"
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The rules, for the client's connector.
    pub fn matcher(&self) -> Matcher {
        let value = |v: &Option<(&'static str, String)>| {
            v.as_ref().map(|(_, v)| v.clone()).unwrap_or_default()
        };
        Matcher::builder()
            .all(value(&self.all))
            .http(value(&self.http))
            .https(value(&self.https))
            .no(self.no.clone())
            .build()
    }
}

/// `http://[user:password@]host[:port][/]` or `host[:port]`: what the
/// matcher turns into a proxy we can use.
fn is_http_proxy(value: &str) -> bool {
    let Ok(uri) = value.parse::<http::Uri>() else {
        return false;
    };
    let scheme_ok = uri.scheme().is_none_or(|s| s == &http::uri::Scheme::HTTP);
    let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    scheme_ok
        && path_ok
        && uri
            .authority()
            .is_some_and(|a| !a.host().is_empty() && !a.as_str().ends_with('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<ProxyConfig, ConfigError> {
        ProxyConfig::read(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn proxy_for(config: &ProxyConfig, url: &str) -> Option<String> {
        config
            .matcher()
            .intercept(&url.parse().unwrap())
            .map(|i| i.uri().to_string())
    }

    #[test]
    fn upper_case_wins_and_all_proxy_fills_in() {
        let c = read(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("all_proxy", "fallback:8080"),
            ("NO_PROXY", "internal.test,10.0.0.0/8"),
        ])
        .unwrap();
        assert_eq!(
            proxy_for(&c, "https://api.test/x").as_deref(),
            Some("http://upper:3128/")
        );
        assert_eq!(
            proxy_for(&c, "http://api.test/x").as_deref(),
            Some("http://fallback:8080/")
        );
        assert_eq!(proxy_for(&c, "https://a.internal.test/x"), None);
        assert_eq!(proxy_for(&c, "http://10.1.2.3/x"), None);
    }

    #[test]
    fn an_empty_upper_case_variable_counts_as_unset() {
        let c = read(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("NO_PROXY", ""),
            ("no_proxy", "internal.test"),
        ])
        .unwrap();
        assert_eq!(proxy_for(&c, "https://a.internal.test/x"), None);
        assert_eq!(
            proxy_for(&c, "https://api.test/x").as_deref(),
            Some("http://proxy:3128/")
        );
        let c = read(&[
            ("HTTPS_PROXY", " "),
            ("https_proxy", "http://secure:3128"),
            ("HTTP_PROXY", ""),
            ("http_proxy", "http://plain:3128"),
        ])
        .unwrap();
        assert_eq!(
            proxy_for(&c, "https://api.test/x").as_deref(),
            Some("http://secure:3128/")
        );
        assert_eq!(
            proxy_for(&c, "http://api.test/x").as_deref(),
            Some("http://plain:3128/")
        );
        let c = read(&[("ALL_PROXY", ""), ("all_proxy", "http://all:3128")]).unwrap();
        assert_eq!(
            proxy_for(&c, "https://api.test/x").as_deref(),
            Some("http://all:3128/")
        );
    }

    #[test]
    fn nothing_set_or_cgi_means_direct() {
        let c = read(&[]).unwrap();
        assert_eq!(proxy_for(&c, "https://api.test/x"), None);
        let c = read(&[("HTTP_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")]).unwrap();
        assert_eq!(proxy_for(&c, "http://api.test/x"), None);
    }

    #[test]
    fn an_unusable_proxy_is_named_without_its_value() {
        for value in [
            "https://u:hunter2@proxy:443",
            "socks5://u:hunter2@proxy:1080",
            "http://u:hunter2@",
            "http://proxy:3128/some/path?hunter2",
            "not a url hunter2",
        ] {
            let e = read(&[("https_proxy", value), ("HTTP_PROXY", "proxy:3128")]).unwrap_err();
            assert_eq!(e.problems.len(), 1, "{value}: {e}");
            assert!(e.problems[0].starts_with("https_proxy is not valid"), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let c = read(&[("HTTP_PROXY", "http://u:p%40ss@proxy:3128/")]).unwrap();
        assert!(!format!("{c:?}").contains("p%40ss"));
    }
}
