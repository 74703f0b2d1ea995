//! Downloads of MNIST and Fashion-MNIST IDX files from a configurable mirror, verified by SHA-256.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// A downloadable dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Mnist,
    FashionMnist,
}

impl Remote {
    pub fn parse(name: &str) -> Option<Remote> {
        match name {
            "mnist" => Some(Remote::Mnist),
            "fashion_mnist" => Some(Remote::FashionMnist),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Remote::Mnist => "mnist",
            Remote::FashionMnist => "fashion_mnist",
        }
    }
}

/// `train` (60,000 samples) or `test` (10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// The images and labels file names on the mirrors.
    pub fn files(self) -> [&'static str; 2] {
        match self {
            Split::Train => ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
            Split::Test => ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
        }
    }
}

/// The official digests (../shared/data/README.md).
fn official_digest(remote: Remote, file: &str) -> Option<&'static str> {
    let table: &[(&str, &str)] = match remote {
        Remote::FashionMnist => &[
            (
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            (
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ],
        Remote::Mnist => &[
            (
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            (
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ],
    };
    table.iter().find(|(f, _)| *f == file).map(|(_, d)| *d)
}

/// Why a download failed; each carries the URL tried.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered HTTP {status}")]
    BadStatus { url: String, status: u16 },
    #[error("{url} has SHA-256 {actual}, expected {expected}; the mirror serves a different file")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("storing the download of {url} failed: {detail}")]
    Io { url: String, detail: String },
}

impl DownloadError {
    pub fn url(&self) -> &str {
        match self {
            DownloadError::Unreachable { url, .. }
            | DownloadError::BadStatus { url, .. }
            | DownloadError::Checksum { url, .. }
            | DownloadError::Io { url, .. } => url,
        }
    }
}

/// Downloads one split's images and labels into temporary files in `tmp_dir`, checking digests.
/// `overrides` maps `source/file` to an expected digest replacing the official one.
pub async fn fetch_split(
    client: &reqwest::Client,
    base_url: &str,
    remote: Remote,
    split: Split,
    overrides: &HashMap<String, String>,
    tmp_dir: &Path,
) -> Result<[NamedTempFile; 2], DownloadError> {
    let [images, labels] = split.files();
    let a = fetch_file(client, base_url, remote, images, overrides, tmp_dir).await?;
    let b = fetch_file(client, base_url, remote, labels, overrides, tmp_dir).await?;
    Ok([a, b])
}

async fn fetch_file(
    client: &reqwest::Client,
    base_url: &str,
    remote: Remote,
    file: &str,
    overrides: &HashMap<String, String>,
    tmp_dir: &Path,
) -> Result<NamedTempFile, DownloadError> {
    let url = format!("{}/{file}", base_url.trim_end_matches('/'));
    let expected = overrides
        .get(&format!("{}/{file}", remote.name()))
        .map(String::as_str)
        .or_else(|| official_digest(remote, file))
        .unwrap_or_default()
        .to_string();
    let io_err = |e: std::io::Error| DownloadError::Io {
        url: url.clone(),
        detail: e.to_string(),
    };
    let res = client
        .get(&url)
        .send()
        .await
        .map_err(|e| DownloadError::Unreachable {
            url: url.clone(),
            detail: error_chain(&e),
        })?;
    if !res.status().is_success() {
        return Err(DownloadError::BadStatus {
            url,
            status: res.status().as_u16(),
        });
    }
    let mut out = NamedTempFile::new_in(tmp_dir).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| DownloadError::Unreachable {
            url: url.clone(),
            detail: format!("the transfer broke off: {}", error_chain(&e)),
        })?;
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(DownloadError::Checksum {
            url,
            expected,
            actual,
        });
    }
    Ok(out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
