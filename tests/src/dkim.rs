//! Helpers for DKIM scenarios: keys made with `openssl` at test time, the records
//! `baton dns-records` prints, a `dnsmasq` serving them as TXT records (values split into
//! 255-byte character-strings) next to MX and A records, and dkimpy (Debian `python3-dkim`) as
//! the independent verifier, resolving keys through that DNS server with dnspython.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::harness::{baton_bin, keyring_dir};

/// A fresh PKCS#8 PEM private key from `openssl genpkey`: `rsa` (2048 bits) or `ed25519`.
pub fn openssl_key(kind: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new("openssl");
    cmd.arg("genpkey");
    match kind {
        "rsa" => cmd.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        "ed25519" => cmd.args(["-algorithm", "ed25519"]),
        other => bail!("unknown key kind {other}"),
    };
    let out = cmd
        .output()
        .context("running openssl (Debian package `openssl`)")?;
    if !out.status.success() {
        bail!("openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A `Secret` document holding `pem` under `private.pem`, for config YAML.
pub fn key_secret(namespace: &str, name: &str, pem: &str) -> String {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         stringData:\n  private.pem: |\n{indented}"
    )
}

/// One record printed by `baton dns-records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintedRecord {
    /// Owner name, no trailing dot.
    pub name: String,
    /// Type (`TXT`).
    pub rtype: String,
    /// Value, unquoted.
    pub value: String,
}

/// Run `baton dns-records --config PATH` and parse its `name IN TYPE value` lines (TXT
/// values quoted).
pub fn dns_records(config: &Path) -> anyhow::Result<Vec<PrintedRecord>> {
    let out = Command::new(baton_bin()?)
        .env("BATON_KEYRING", keyring_dir())
        .args(["dns-records", "--config"])
        .arg(config)
        .output()?;
    if !out.status.success() {
        bail!(
            "baton dns-records failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut records = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.is_empty())
    {
        let mut parts = line.splitn(4, '\t');
        let (Some(name), Some("IN"), Some(rtype), Some(value)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("unexpected dns-records line: {line:?}");
        };
        // TXT values are quoted, MX values are not.
        let value = if rtype == "TXT" {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .with_context(|| format!("unquoted value in {line:?}"))?
        } else {
            value
        };
        records.push(PrintedRecord {
            name: name.to_string(),
            rtype: rtype.to_string(),
            value: value.to_string(),
        });
    }
    Ok(records)
}

/// A TXT value as DNS character-strings of at most 255 bytes (RFC 1035 §3.3.14); a DKIM
/// verifier concatenates them (RFC 6376 §3.6.2.2).
pub fn txt_strings(value: &str) -> Vec<&str> {
    let mut rest = value;
    let mut out = Vec::new();
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// The Debian interpreter: python3-dkim and python3-dnspython live in its dist-packages.
const PYTHON: &str = "/usr/bin/python3";

/// Verifies every DKIM-Signature of the message on stdin with dkimpy, fetching keys from the
/// DNS server given as argv[1] (host) and argv[2] (port). Prints one JSON object per
/// signature: `{"d": ..., "s": ..., "ok": bool, "error": why not}`.
const VERIFY_PY: &str = r#"
import json, sys
import dkim, dns.resolver
res = dns.resolver.Resolver(configure=False)
res.nameservers = [sys.argv[1]]
res.port = int(sys.argv[2])
def txt(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    try:
        answer = res.resolve(name, "TXT", lifetime=timeout)
    except Exception:
        return None
    for r in answer:
        return b"".join(r.strings)
    return None
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg, minkey=1024)
sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
out = []
for i, v in enumerate(sigs):
    tags = dkim.util.parse_tag_value(b"".join(v.split()))
    err = ""
    try:
        ok = bool(d.verify(idx=i, dnsfunc=txt))
    except Exception as e:
        ok, err = False, repr(e)
    if not ok and not err:
        key = txt(tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"") + b".")
        err = "signature did not verify" if key else "no key record in DNS"
    out.append({"d": tags.get(b"d", b"").decode(), "s": tags.get(b"s", b"").decode(),
                "ok": ok, "error": err})
print(json.dumps(out))
"#;

/// One signature as dkimpy judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `d=` of the signature.
    pub domain: String,
    /// `s=` of the signature.
    pub selector: String,
    /// dkimpy verified it.
    pub ok: bool,
    /// Why not (empty when `ok`).
    pub error: String,
}

/// Verify every DKIM signature of `message` with dkimpy against the keys published in `dns`.
pub fn dkimpy_verify(message: &[u8], dns: SocketAddr) -> anyhow::Result<Vec<Verdict>> {
    let mut child = Command::new(PYTHON)
        .args([
            "-c",
            VERIFY_PY,
            &dns.ip().to_string(),
            &dns.port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running /usr/bin/python3 (Debian packages python3-dkim, python3-dnspython)")?;
    child.stdin.take().context("stdin")?.write_all(message)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("dkimpy failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let list = v.as_array().context("dkimpy output is a list")?;
    Ok(list
        .iter()
        .map(|s| Verdict {
            domain: s["d"].as_str().unwrap_or_default().to_string(),
            selector: s["s"].as_str().unwrap_or_default().to_string(),
            ok: s["ok"].as_bool().unwrap_or(false),
            error: s["error"].as_str().unwrap_or_default().to_string(),
        })
        .collect())
}
