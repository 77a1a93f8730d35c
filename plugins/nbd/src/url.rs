//! NBD URLs: `nbd://HOST[:PORT][/EXPORT]`, the form QEMU, libnbd and nbdkit print for a TCP
//! export. The export name is percent-decoded; TLS (`nbds://`) and Unix socket URLs are refused
//! because this client speaks neither.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// The port IANA reserves for NBD, used when a URL names none.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an NBD export lives: a TCP host and port and the export's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NbdUrl {
    /// Host name or IP address; an IPv6 address without its brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Export name, percent-decoded; empty for the server's default export.
    pub export: String,
}

/// A URL that is not an `nbd://` URL this client can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NBD URL {url:?}: {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl NbdUrl {
    /// Parses `nbd://HOST[:PORT][/EXPORT]`, with `[IPv6]` hosts and the port defaulting to
    /// [`DEFAULT_PORT`].
    pub fn parse(url: &str) -> Result<NbdUrl, UrlError> {
        let fail = |reason: &str| UrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("expected nbd://HOST[:PORT]/EXPORT"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "nbd" => {}
            "nbds" | "nbds+unix" | "nbds+vsock" => {
                return Err(fail("TLS (nbds://) is not supported; use nbd://"));
            }
            "nbd+unix" | "nbd+vsock" => {
                return Err(fail(
                    "only TCP exports (nbd://HOST:PORT/EXPORT) are supported",
                ));
            }
            _ => return Err(fail("the scheme must be nbd://")),
        }
        if rest.contains(['?', '#']) {
            return Err(fail("query strings and fragments are not supported"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(fail("user names are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| fail("missing ']' after the IPv6 address"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(fail("the bracketed host is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| fail("expected ':PORT' after the IPv6 address"))?,
                ),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(fail("an IPv6 address must be written in brackets: [::1]"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(fail("the host is missing"));
        }
        // A bracketed host was checked as an IPv6 address above; anything else must look like
        // a DNS name or an IPv4 address.
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(fail("the host contains characters a host name cannot have"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(fail("the port must be a number"));
                }
                match p.parse::<u16>() {
                    Ok(0) | Err(_) => return Err(fail("the port must be between 1 and 65535")),
                    Ok(port) => port,
                }
            }
        };
        let export = percent_decode(path).map_err(|reason| fail(&reason))?;
        Ok(NbdUrl {
            host: host.to_owned(),
            port,
            export,
        })
    }

    /// Host and port in the form [`std::net::TcpStream::connect`] takes.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl FromStr for NbdUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NbdUrl::parse(s)
    }
}

impl fmt::Display for NbdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "nbd://[{}]:{}/", self.host, self.port)?;
        } else {
            write!(f, "nbd://{}:{}/", self.host, self.port)?;
        }
        for b in self.export.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = |c: Option<u8>| c.and_then(|c| (c as char).to_digit(16));
            match (hex(bytes.next()), hex(bytes.next())) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err("'%' in the export name must be followed by two hex digits".into()),
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| "the decoded export name is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, export: &str) -> NbdUrl {
        NbdUrl {
            host: host.into(),
            port,
            export: export.into(),
        }
    }

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(
            NbdUrl::parse("nbd://10.0.0.5:10810/vda").unwrap(),
            url("10.0.0.5", 10810, "vda")
        );
        assert_eq!(NbdUrl::parse("nbd://host").unwrap(), url("host", 10809, ""));
        assert_eq!(
            NbdUrl::parse("NBD://host.example/").unwrap(),
            url("host.example", 10809, "")
        );
        assert_eq!(
            NbdUrl::parse("nbd://[::1]:10809/x").unwrap(),
            url("::1", 10809, "x")
        );
        assert_eq!(
            NbdUrl::parse("nbd://[fe80::1]/").unwrap(),
            url("fe80::1", 10809, "")
        );
        assert_eq!(
            NbdUrl::parse("nbd://h:1/dir/disk%20one").unwrap(),
            url("h", 1, "dir/disk one")
        );
    }

    #[test]
    fn refuses_what_it_cannot_use_and_names_the_url() {
        for bad in [
            "",
            "host:10809",
            "http://host/x",
            "nbds://host/x",
            "nbd+unix:///x?socket=/tmp/s",
            "nbd://",
            "nbd://:10809/x",
            "nbd://host:/x",
            "nbd://host:0/x",
            "nbd://host:65536/x",
            "nbd://host:12a/x",
            "nbd://::1/x",
            "nbd://[::1/x",
            "nbd://[nothost]:1/x",
            "nbd://[::1]x/x",
            "nbd://user@host/x",
            "nbd://host/x?tls=on",
            "nbd://host/x%2",
            "nbd://host/x%ff",
            "nbd://ho st/x",
        ] {
            let err = NbdUrl::parse(bad).expect_err(bad);
            assert_eq!(err.url, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for u in [
            url("::1", 10809, "x"),
            url("h", 7, "a b/c%d"),
            url("h", 7, ""),
        ] {
            assert_eq!(NbdUrl::parse(&u.to_string()).unwrap(), u);
        }
    }

    #[test]
    fn address_fits_tcp_connect() {
        let u = NbdUrl::parse("nbd://[::1]:5/x").unwrap();
        assert_eq!(u.address(), ("::1", 5));
    }
}
