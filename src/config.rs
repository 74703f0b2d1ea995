//! Settings from command-line flags and `FITD_*` environment variables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `fitd`: train Keras-style Sequential models over HTTP.
#[derive(Debug, Parser)]
#[command(name = "fitd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (with `--workers N` training threads; `--workers 0` serves the API only).
    Serve(Box<Config>),
    /// Run a worker node of a cluster: trains jobs from the shared PostgreSQL database and serves
    /// only /healthz, /readyz and /metrics on --addr.
    Worker(Box<Config>),
    /// Print the OpenAPI description (YAML) of the HTTP API to stdout.
    Openapi,
    /// Create, list or revoke API tokens, directly on the database (works while a server runs).
    Token(TokenArgs),
}

/// `fitd token ...`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The server's database: a SQLite file or a `postgres://` URL.
    #[arg(long, env = "FITD_DB", default_value = "./fitd.db", global = true)]
    pub db: crate::store::Db,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it on stdout; it is shown only this once.
    Create {
        /// What the token is for (e.g. `ci`, `grafana`).
        #[arg(long)]
        name: String,
        /// Scopes, repeated or comma-separated: read, train, predict, admin.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<crate::auth::Scope>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; requests with it are refused from the next one on.
    Revoke {
        /// The token's id, as `fitd token list` shows it.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `fitd serve` can be told; tests build it with [`Config::for_tests`].
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, env = "FITD_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// The database: a SQLite file, created on first start (dataset arrays live next to it in
    /// `<stem>-data/`), or a `postgres://user:password@host/db` URL shared by the nodes of a cluster.
    #[arg(long, env = "FITD_DB", default_value = "./fitd.db")]
    pub db: crate::store::Db,

    /// This node's directory for files (default: `<stem>-data/` next to a SQLite file,
    /// `./fitd-data` with PostgreSQL).
    #[arg(long, env = "FITD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// This node's name in a cluster, recorded on the jobs its workers run (default `<host>:<pid>`).
    #[arg(long, env = "FITD_NODE_NAME")]
    pub node_name: Option<String>,

    /// Seconds a worker's claim on a job holds without renewal (renewed every second while the job
    /// trains); when a node dies, another takes its jobs over this long after its last renewal.
    #[arg(long, env = "FITD_JOB_LEASE_SECS", default_value_t = crate::jobs::DEFAULT_LEASE_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub job_lease_secs: u64,

    /// Training worker threads (default: number of cores; 0 serves the API without training).
    #[arg(long, env = "FITD_WORKERS", default_value_t = default_workers())]
    pub workers: usize,

    /// Threads each training job uses (default: 1 below batch size 128, else cores / workers).
    /// Measured on 2 cores: a second thread makes batch 256 1.6x faster but batch 32 erratic, since
    /// each batch hands work over twice and stalls whenever either thread loses its core.
    #[arg(long, env = "FITD_THREADS_PER_JOB")]
    pub threads_per_job: Option<usize>,

    /// Largest accepted dataset upload body, in bytes (default 1 GiB).
    #[arg(long, env = "FITD_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: usize,

    /// Largest dataset one upload or download may decode to, in bytes (default 512 MiB: 60,000
    /// Fashion-MNIST images take 47 MB as bytes, 188 MB as float32). Counted as held while checked:
    /// 1 byte per uint8 feature value, 4 per other feature value, 8 per label; checked against each
    /// array's declared size before it is read, and while a CSV is parsed.
    #[arg(long, env = "FITD_MAX_DATASET_BYTES", default_value_t = 512 << 20)]
    pub max_dataset_bytes: u64,

    /// Dataset uploads and downloads decoded at the same time; more are refused with 503 and
    /// `Retry-After` before their body is read.
    #[arg(long, env = "FITD_MAX_CONCURRENT_UPLOADS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_uploads: u32,

    /// Largest accepted JSON request body, in bytes (default 8 MiB).
    #[arg(long, env = "FITD_MAX_JSON_BYTES", default_value_t = 8 << 20)]
    pub max_json_bytes: usize,

    /// Largest parameter count a model may have; bigger models are rejected with 422.
    #[arg(long, env = "FITD_MAX_PARAMS", default_value_t = 50_000_000)]
    pub max_params: u64,

    /// Log format on stderr.
    #[arg(long, env = "FITD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds a request may take before the server answers 408 (streams are not cut).
    #[arg(long, env = "FITD_REQUEST_TIMEOUT_SECS", default_value_t = 300)]
    pub request_timeout_secs: u64,

    /// Largest predict or infer request body, in bytes (default 64 MiB), checked against
    /// `Content-Length` before reading and while the body streams in; `413` past it. Separate from
    /// the upload limit: a predict body is held in memory whole, a dataset upload is not.
    #[arg(long, env = "FITD_MAX_PREDICT_BYTES", default_value_t = 64 << 20)]
    pub max_predict_bytes: usize,

    /// Seconds a client has to send a complete request head, counted from connecting or from the first
    /// byte after an idle pause; slower connections are closed.
    #[arg(long, env = "FITD_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// Seconds a keep-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "FITD_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,

    /// Most open client connections (event streams included). At the limit, the connection that has
    /// waited longest for a request is closed to admit a new one; lowered to fit the open-file limit.
    #[arg(long, env = "FITD_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Most instances one predict or infer request may carry; larger batches are refused with 422.
    #[arg(long, env = "FITD_MAX_PREDICT_ROWS", default_value_t = 10_000)]
    pub max_predict_rows: usize,

    /// Predicts whose body has at most 4 bytes per value of this (the size of that many float32
    /// values) are parsed and run on the request's task; bigger ones go to the blocking pool so they
    /// never stall other requests (0: always the blocking pool).
    #[arg(long, env = "FITD_PREDICT_INLINE_VALUES", default_value_t = 65_536)]
    pub predict_inline_values: usize,

    /// Bytes of decoded model weights kept in memory for predictions (default 512 MiB); the least
    /// recently used models are dropped beyond it.
    #[arg(long, env = "FITD_MODEL_CACHE_BYTES", default_value_t = 512 << 20)]
    pub model_cache_bytes: usize,

    /// Bytes of decoded datasets (float32 features and labels) kept in memory for jobs (default
    /// 1 GiB; 60,000 28x28 images take 190 MB); the least recently used datasets are dropped beyond
    /// it, deleted ones at once. 0 turns the cache off.
    #[arg(long, env = "FITD_DATASET_CACHE_BYTES", default_value_t = crate::store::DEFAULT_DATASET_CACHE_BYTES)]
    pub dataset_cache_bytes: u64,

    /// Base URL the MNIST IDX files are downloaded from.
    #[arg(
        long,
        env = "FITD_MNIST_URL",
        default_value = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    )]
    pub mnist_url: String,

    /// Base URL the Fashion-MNIST IDX files are downloaded from.
    #[arg(
        long,
        env = "FITD_FASHION_MNIST_URL",
        default_value = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
    )]
    pub fashion_mnist_url: String,

    /// Expected SHA-256 of a downloaded file, as `source/file=hex`
    /// (e.g. `mnist/train-images-idx3-ubyte.gz=...`); overrides the built-in digest, for private mirrors.
    #[arg(long = "download-sha256", env = "FITD_DOWNLOAD_SHA256", value_delimiter = ',', value_parser = parse_digest)]
    pub download_sha256: Vec<(String, String)>,

    /// Serve without API tokens on a non-loopback address. Without it, fitd refuses to start on
    /// such an address while the database has no token. Once any token exists, tokens are required
    /// whatever this says.
    #[arg(long, env = "FITD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// A file holding a token (e.g. a Docker secret, from `openssl rand -hex 32`) to register at
    /// start as an admin token with every scope, unless that token was registered before.
    #[arg(long, env = "FITD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Web origins (`https://app.example.com`) allowed to call the API from a browser: they get CORS
    /// headers, and their cross-site requests may change state. Repeated or comma-separated; none
    /// by default, so browsers only reach the API from the dashboard's own origin.
    #[arg(long = "cors-origin", env = "FITD_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
}

fn default_workers() -> usize {
    cores()
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Config {
    /// How this node's workers claim jobs.
    pub fn worker_options(&self) -> crate::jobs::WorkerOptions {
        crate::jobs::WorkerOptions {
            workers: self.workers,
            node: self
                .node_name
                .clone()
                .unwrap_or_else(crate::jobs::default_node_name),
            lease: std::time::Duration::from_secs(self.job_lease_secs),
        }
    }

    /// The engine threads for a job with this batch size: the explicit setting, else one thread for
    /// small batches and an even share of the cores among the workers for large ones.
    pub fn job_threads(&self, batch_size: usize) -> usize {
        match self.threads_per_job {
            Some(n) => n.max(1),
            None if batch_size >= 128 => (cores() / self.workers.max(1)).max(1),
            None => 1,
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, lowercased, without a path.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?} is not an origin: expected http(s)://host[:port]"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return Err(format!(
            "{s:?} is not an origin: expected http(s)://host[:port] without a path"
        ));
    }
    Ok(s)
}

fn parse_digest(s: &str) -> Result<(String, String), String> {
    let (key, hex) = s
        .split_once('=')
        .ok_or_else(|| "expected source/file=sha256hex".to_string())?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{hex:?} is not a 64-digit hexadecimal SHA-256"));
    }
    Ok((key.to_string(), hex.to_ascii_lowercase()))
}

impl Config {
    /// Defaults as `fitd serve` would use them, listening on a free port with the given database.
    pub fn for_tests(db: impl Into<crate::store::Db>) -> Config {
        Config {
            addr: "127.0.0.1:0".parse().expect("valid literal address"),
            db: db.into(),
            data_dir: None,
            node_name: None,
            job_lease_secs: crate::jobs::DEFAULT_LEASE_SECS,
            workers: 2,
            threads_per_job: None,
            max_upload_bytes: 1 << 30,
            max_dataset_bytes: 512 << 20,
            max_concurrent_uploads: 2,
            max_json_bytes: 8 << 20,
            max_params: 50_000_000,
            log_format: LogFormat::Text,
            request_timeout_secs: 300,
            max_predict_bytes: 64 << 20,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            max_predict_rows: 10_000,
            predict_inline_values: 65_536,
            model_cache_bytes: 512 << 20,
            dataset_cache_bytes: crate::store::DEFAULT_DATASET_CACHE_BYTES,
            mnist_url: "http://127.0.0.1:9/mnist/".into(),
            fashion_mnist_url: "http://127.0.0.1:9/fashion/".into(),
            download_sha256: Vec::new(),
            insecure_no_auth: false,
            admin_token_file: None,
            cors_origins: Vec::new(),
        }
    }

    /// Digest overrides keyed by `source/file`.
    pub fn digest_overrides(&self) -> HashMap<String, String> {
        self.download_sha256.iter().cloned().collect()
    }
}

#[cfg(test)]
mod thread_tests {
    use super::*;

    #[test]
    fn jobs_get_one_thread_for_small_batches_and_a_share_of_the_cores_for_large_ones() {
        let mut c = Config::for_tests(PathBuf::from("x.db"));
        c.workers = 1;
        assert_eq!(c.job_threads(32), 1);
        assert_eq!(c.job_threads(256), cores());
        c.workers = cores() * 2;
        assert_eq!(c.job_threads(256), 1, "never below one thread");
        c.threads_per_job = Some(3);
        assert_eq!(c.job_threads(32), 3);
    }
}
