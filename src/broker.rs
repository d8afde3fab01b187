//! The MQTT broker's address and credentials, as the manager and the
//! servers read them from their settings (docs/social.md, "Broker setup"):
//! `mqtt://` or `mqtts://` URLs with an optional `user:password@`, the
//! password and CA files beside them, and the TLS client config that
//! trusts the broker's CA.
//!
//! Passwords never reach a log: a [`BrokerUrl`] shows `***` in their
//! place (Display and Debug alike), [`UrlSetting`] does the same for the
//! raw setting, and error messages name URLs through [`redact`].

use crate::config::SecretString;
use crate::{Error, Result};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Port of `mqtt://` when the URL names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// Port of `mqtts://` when the URL names none.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;

/// What stands for a password wherever a URL is shown.
const HIDDEN: &str = "***";

/// A parsed broker URL: `mqtt://` (also `tcp://`, or a bare `host:port`)
/// or `mqtts://` (also `ssl://`), `[user[:password]@]host[:port]`, the
/// user and password percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name, if the URL gives one.
    pub username: Option<String>,
    /// Password, if the URL gives one (Debug hides it).
    pub password: Option<SecretString>,
}

impl BrokerUrl {
    /// Parse `url`; errors name it with its password hidden.
    pub fn parse(url: &str) -> Result<BrokerUrl> {
        let bad = |why: &str| Error::InvalidInput(format!("broker {:?}: {why}", redact(url)));
        let (tls, rest) = match url.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (false, rest),
            Some(("mqtts" | "ssl", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "unknown scheme {scheme:?}; expected mqtt://host:port or mqtts://host:port"
                )))
            }
            None => (false, url),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains(['/', '?', '#']) {
            return Err(bad("expected no path: mqtt[s]://[user:password@]host:port"));
        }
        // The host cannot hold an `@`, a password may: split at the last.
        let (userinfo, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => (Some(userinfo), address),
            None => (None, rest),
        };
        let decode = |part: &str, what: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| bad(&format!("the {what} is not UTF-8 once percent-decoded")))
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                if user.is_empty() {
                    return Err(bad("a password without a user name"));
                }
                let password = match password {
                    Some(p) => Some(SecretString::from(decode(p, "password")?)),
                    None => None,
                };
                (Some(decode(user, "user name")?), password)
            }
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match address.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => match port.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("expected [address]:port")),
                },
                None => return Err(bad("an unclosed [")),
            },
            None => match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None if tls => DEFAULT_MQTTS_PORT,
            None => DEFAULT_MQTT_PORT,
            Some(port) => port
                .parse()
                .map_err(|_| bad(&format!("bad port {port:?}")))?,
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
            username,
            password,
        })
    }

    /// The URL with its password, for the manager to name the broker to
    /// servers (over the authenticated `Broker` RPC). Never log it.
    pub fn expose(&self) -> String {
        self.render(|password| {
            percent_encoding::utf8_percent_encode(password, USERINFO).to_string()
        })
    }

    fn render(&self, password: impl Fn(&str) -> String) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let userinfo = match (&self.username, &self.password) {
            (Some(user), Some(pass)) => format!(
                "{}:{}@",
                percent_encoding::utf8_percent_encode(user, USERINFO),
                password(pass)
            ),
            (Some(user), None) => {
                format!("{}@", percent_encoding::utf8_percent_encode(user, USERINFO))
            }
            _ => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{userinfo}{host}:{}", self.port)
    }
}

/// Characters a user name or password must have percent-encoded in a URL.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl std::fmt::Display for BrokerUrl {
    /// The URL with `***` for its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(|_| HIDDEN.to_string()))
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// `url` with the password of its `user:password@` part (if any) replaced
/// by `***`; works on URLs that do not parse, for their error messages.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, address)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{HIDDEN}@{address}"),
            None => format!("{userinfo}@{address}"),
        },
        None => authority.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// A broker URL as a setting (flag, variable, node.toml key), kept as
/// written: its Debug hides the password, so logging the settings cannot
/// leak it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UrlSetting(String);

impl std::fmt::Debug for UrlSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact(&self.0))
    }
}

impl std::ops::Deref for UrlSetting {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for UrlSetting {
    fn from(url: String) -> Self {
        UrlSetting(url)
    }
}

impl From<&str> for UrlSetting {
    fn from(url: &str) -> Self {
        UrlSetting(url.to_string())
    }
}

/// Credentials and trust for the broker, from a node's own settings; they
/// apply to whichever broker it connects to (its own `broker`, or the one
/// the manager names) and override a user and password in the URL.
#[derive(Clone, Default, Debug)]
pub struct BrokerAuth {
    /// `broker_username`.
    pub username: Option<String>,
    /// The first line of `broker_password_file` (Debug hides it).
    pub password: Option<SecretString>,
    /// The certificates of `broker_ca` (PEM), trusted instead of the
    /// system's roots for an `mqtts://` broker.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// `broker_ca`'s path, for messages.
    pub ca_path: Option<std::path::PathBuf>,
}

impl BrokerAuth {
    /// Read `password_file` and `ca` (both optional); a file that cannot
    /// be read, an empty password or a CA file without a certificate is
    /// refused, naming the file and the setting.
    pub fn load(
        username: Option<String>,
        password_file: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<BrokerAuth> {
        let password = match password_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::InvalidInput(format!(
                        "broker_password_file {}: cannot read it: {e}",
                        path.display()
                    ))
                })?;
                // The first line: a file written by `echo` ends in a newline
                // that is not part of the password.
                let password = text.lines().next().unwrap_or("").to_string();
                if password.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "broker_password_file {}: the file is empty; its first line is the password",
                        path.display()
                    )));
                }
                Some(SecretString::from(password))
            }
        };
        if password.is_some() && username.is_none() {
            return Err(Error::InvalidInput(
                "broker_password_file is set without broker_username: a broker checks a password for a user".into(),
            ));
        }
        let certificates = match ca {
            None => None,
            Some(path) => Some(read_ca(path)?),
        };
        Ok(BrokerAuth {
            username,
            password,
            ca: certificates,
            ca_path: ca.map(Path::to_path_buf),
        })
    }

    /// `url` with this node's user and password in place of the URL's
    /// own, when it has them.
    pub fn apply(&self, mut url: BrokerUrl) -> BrokerUrl {
        if let Some(username) = &self.username {
            url.username = Some(username.clone());
            url.password = self.password.clone();
        }
        url
    }

    /// The TLS client config for an `mqtts://` broker: trusting
    /// `broker_ca` if set, else the system's roots; the cluster's own
    /// provider and suites, as every other TLS link.
    pub fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(certificates) => {
                let (_, ignored) = roots.add_parsable_certificates(certificates.iter().cloned());
                if roots.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "broker_ca {}: none of its {ignored} certificates is usable as a CA",
                        self.ca_path
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "no system CA certificates to check the broker's with ({} error(s) reading them); set broker_ca to the PEM file of the CA that signed the broker's certificate",
                        found.errors.len()
                    )));
                }
            }
        }
        let provider = Arc::new(crate::tls::crypto_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The certificates of the PEM file `path` (`broker_ca`).
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |why: String| Error::InvalidInput(format!("broker_ca {}: {why}", path.display()));
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let blocks = pem::parse_many(&text).map_err(|e| bad(format!("not PEM: {e}")))?;
    let certificates: Vec<_> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if certificates.is_empty() {
        return Err(bad(
            "no CERTIFICATE in it; give the PEM file of the CA that signed the broker's certificate"
                .into(),
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (bool, String, u16, Option<String>, Option<String>) {
        let u = BrokerUrl::parse(url).unwrap();
        (
            u.tls,
            u.host,
            u.port,
            u.username,
            u.password.map(|p| p.to_string()),
        )
    }

    #[test]
    fn urls_with_schemes_ports_and_credentials() {
        assert_eq!(
            parts("mqtt://h:1884"),
            (false, "h".into(), 1884, None, None)
        );
        assert_eq!(
            parts("tcp://10.0.0.1"),
            (false, "10.0.0.1".into(), 1883, None, None)
        );
        assert_eq!(parts("h:7"), (false, "h".into(), 7, None, None));
        assert_eq!(
            parts("mqtt://[::1]:9"),
            (false, "::1".into(), 9, None, None)
        );
        assert_eq!(parts("mqtts://h"), (true, "h".into(), 8883, None, None));
        assert_eq!(parts("ssl://h:1/"), (true, "h".into(), 1, None, None));
        assert_eq!(
            parts("mqtts://ann:p%40ss%3Aw%2Fd@mq.example:8884"),
            (
                true,
                "mq.example".into(),
                8884,
                Some("ann".into()),
                Some("p@ss:w/d".into())
            )
        );
        // An unencoded `@` in the password: the host follows the last one.
        assert_eq!(
            parts("mqtt://a%20b:x@y@[::1]"),
            (
                false,
                "::1".into(),
                1883,
                Some("a b".into()),
                Some("x@y".into())
            )
        );
        assert_eq!(
            parts("mqtt://ann@h"),
            (false, "h".into(), 1883, Some("ann".into()), None)
        );
        for bad in [
            "mqtt://h:x",
            "http://h:1",
            "mqtt://",
            "mqtt://:pw@h",
            "mqtt://h:1/path",
            "mqtt://[::1",
            "mqtt://u:%ff@h",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_hidden_wherever_a_url_is_shown() {
        let url = BrokerUrl::parse("mqtts://ann:hunter2@h").unwrap();
        assert_eq!(url.to_string(), "mqtts://ann:***@h:8883");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "mqtts://ann:hunter2@h:8883");
        let odd = BrokerUrl::parse("mqtt://a%20b:p%40ss%3A@[::1]:2").unwrap();
        assert_eq!(BrokerUrl::parse(&odd.expose()).unwrap(), odd);
        let setting = UrlSetting::from("mqtt://ann:hunter2@h:1");
        assert_eq!(format!("{setting:?}"), "\"mqtt://ann:***@h:1\"");
        let err = BrokerUrl::parse("mqtt://ann:hunter2@h:nope").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(redact("h:1"), "h:1");
        assert_eq!(redact("ann:pw@h:1/x"), "ann:***@h:1/x");
    }

    #[test]
    fn unreadable_or_empty_files_are_refused_with_their_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = BrokerAuth::load(Some("ann".into()), Some(&missing), None).unwrap_err();
        assert!(err.to_string().contains("broker_password_file"), "{err}");
        let err = BrokerAuth::load(None, None, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("broker_ca"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(BrokerAuth::load(Some("ann".into()), Some(&empty), None).is_err());
        let err = BrokerAuth::load(None, None, Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let err = BrokerAuth::load(None, Some(&password), None).unwrap_err();
        assert!(err.to_string().contains("broker_username"), "{err}");
        let auth = BrokerAuth::load(Some("ann".into()), Some(&password), None).unwrap();
        assert_eq!(auth.password.as_deref(), Some("s3cret"));
        assert!(!format!("{auth:?}").contains("s3cret"));
        let url = auth.apply(BrokerUrl::parse("mqtt://bob:other@h").unwrap());
        assert_eq!(url.expose(), "mqtt://ann:s3cret@h:1883");
        crate::tls::Ca::load_or_create(dir.path()).unwrap();
        let ca_file = dir.path().join(crate::tls::CA_CERT_FILE);
        let auth = BrokerAuth::load(None, None, Some(&ca_file)).unwrap();
        auth.tls_config().unwrap();
    }
}
