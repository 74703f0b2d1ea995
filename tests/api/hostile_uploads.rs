//! Hostile dataset uploads, built here byte by byte: headers that declare more data than is sent,
//! decompression bombs, huge text parts and file names, endless CSV rows, too many uploads at once.
//! Each is refused with a problem naming the part, the server keeps answering, and nothing is left
//! on disk.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use super::datasets::stored_files;
use super::support::{TestApp, assert_problem, error_fields, spawn_app, spawn_app_with};

fn part(bytes: Vec<u8>, filename: &str) -> Part {
    Part::bytes(bytes).file_name(filename.to_string())
}

async fn upload(app: &TestApp, form: Form) -> reqwest::Response {
    app.client
        .post(app.url("/v1/datasets"))
        .multipart(form)
        .send()
        .await
        .expect("the server answers")
}

/// Asserts the upload was refused with `status` naming `field`, that the server still answers, and
/// that no dataset, temporary file or partial directory remains. Returns the problem's detail.
async fn assert_refused(app: &TestApp, res: reqwest::Response, status: u16, field: &str) -> String {
    let problem = assert_problem(res, status).await;
    if status == 422 {
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    let list: Value = app.get("/v1/datasets").await.json().await.unwrap();
    assert_eq!(list["items"], serde_json::json!([]));
    assert_eq!(stored_files(app), Vec::<PathBuf>::new());
    problem["detail"].as_str().unwrap().to_string()
}

/// An `.npy` version 1.0 header for `descr` and `shape` (Python tuple syntax), padded like NumPy's.
fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut out = npy_header(descr, shape);
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One zip entry as written: its stored bytes, and the sizes its headers declare (true or not).
struct Entry {
    name: &'static str,
    deflated: bool,
    data: Vec<u8>,
    declared_size: u32,
    crc: u32,
}

impl Entry {
    /// An honest entry holding `content`, deflated or stored.
    fn honest(name: &'static str, content: &[u8], deflated: bool) -> Entry {
        let mut crc = flate2::Crc::new();
        crc.update(content);
        Entry {
            name,
            deflated,
            data: if deflated {
                deflate(content)
            } else {
                content.to_vec()
            },
            declared_size: content.len() as u32,
            crc: crc.sum(),
        }
    }
}

/// A zip archive written field by field, so its headers can say whatever a test needs.
fn zip(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let method: u16 = if e.deflated { 8 } else { 0 };
        let fields = |sig: &[u8], central: bool| {
            let mut h = sig.to_vec();
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // version made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&[0, 0, 0x21, 0]); // time, date
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            h.extend_from_slice(&e.declared_size.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra length
            if central {
                h.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(e.name.as_bytes());
            h
        };
        out.extend(fields(b"PK\x03\x04", false));
        out.extend_from_slice(&e.data);
        central.extend(fields(b"PK\x01\x02", true));
    }
    let dir_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&dir_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn npz_form(bytes: Vec<u8>) -> Form {
    Form::new()
        .text("name", "hostile")
        .part("file", part(bytes, "d.npz"))
}

fn labels_npy(n: usize) -> Vec<u8> {
    npy("|u1", &format!("({n},)"), &vec![1; n])
}

/// An IDX header: unsigned bytes with `dims`.
fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

fn idx_form(images: Vec<u8>, labels: Vec<u8>) -> Form {
    Form::new()
        .text("name", "hostile")
        .part("images", part(images, "images.gz"))
        .part("labels", part(labels, "labels.gz"))
}

#[tokio::test]
async fn a_336_byte_npy_declaring_a_trillion_values_is_a_422_and_the_server_lives_on() {
    let app = spawn_app().await;
    let x = npy("<f4", "(1000000, 1000000)", &[0; 208]);
    assert_eq!(x.len(), 336);
    let form = Form::new()
        .part("x", part(x.clone(), "x.npy"))
        .part("y", part(labels_npy(2), "y.npy"));
    let detail = assert_refused(&app, upload(&app, form).await, 422, "x").await;
    assert!(
        detail.contains("(1000000, 1000000) float32 declares 4000000000000 bytes of data but holds only 208"),
        "{detail}"
    );

    // The same array as labels, and as features whose size is honest but over the cap.
    let form = Form::new()
        .part("x", part(npy("|u1", "(2, 2)", &[0; 4]), "x.npy"))
        .part("y", part(x, "y.npy"));
    assert_refused(&app, upload(&app, form).await, 422, "y").await;

    let app = spawn_app_with(|c| c.max_dataset_bytes = 1 << 20).await;
    let form = Form::new()
        .part(
            "x",
            part(npy("<f8", "(1000, 300)", &vec![0; 8 * 300_000]), "x.npy"),
        )
        .part("y", part(labels_npy(1000), "y.npy"));
    let detail = assert_refused(&app, upload(&app, form).await, 422, "x").await;
    assert!(
        detail.contains("decodes to 1200000 bytes, over this server's limit of 1048576 bytes"),
        "{detail}"
    );
}

#[tokio::test]
async fn npz_members_are_checked_against_their_zip_entries_before_inflating() {
    let app = spawn_app_with(|c| c.max_dataset_bytes = 4 << 20).await;
    let y = Entry::honest("y.npy", &labels_npy(4), false);

    // A stored member whose npy header declares a trillion values.
    let huge = npy("<f4", "(1000000, 1000000)", &[0; 208]);
    let bytes = zip(&[
        Entry::honest("x.npy", &huge, false),
        Entry::honest("y.npy", &labels_npy(4), false),
    ]);
    let detail = assert_refused(&app, upload(&app, npz_form(bytes)).await, 422, "file").await;
    assert!(detail.contains("array \"x\""), "{detail}");
    assert!(detail.contains("holds only 208"), "{detail}");

    // A deflate bomb: 64 MB of zeros, honestly declared, over the 4 MiB cap.
    let bomb = npy("|u1", "(64000, 1000)", &vec![0; 64_000_000]);
    let bytes = zip(&[
        Entry::honest("x.npy", &bomb, true),
        Entry::honest("y.npy", &labels_npy(64_000), true),
    ]);
    assert!(bytes.len() < 200_000, "the bomb is {} bytes", bytes.len());
    let detail = assert_refused(&app, upload(&app, npz_form(bytes)).await, 422, "file").await;
    assert!(
        detail.contains("over this server's limit of 4194304 bytes"),
        "{detail}"
    );

    // The same bomb with an entry that lies: it says it inflates to 1000 bytes.
    let mut liar = Entry::honest("x.npy", &bomb, true);
    liar.declared_size = 1000;
    let bytes = zip(&[liar, Entry::honest("y.npy", &labels_npy(4), false)]);
    let detail = assert_refused(&app, upload(&app, npz_form(bytes)).await, 422, "file").await;
    assert!(
        detail.contains("declares 64000000 bytes of data but holds only"),
        "{detail}"
    );

    // An entry claiming 4 GB from a few bytes of deflate data.
    let mut liar = Entry::honest("x.npy", &npy("|u1", "(2, 2)", &[0; 4]), true);
    liar.declared_size = u32::MAX;
    let bytes = zip(&[liar, y]);
    let detail = assert_refused(&app, upload(&app, npz_form(bytes)).await, 422, "file").await;
    assert!(detail.contains("more than its"), "{detail}");

    // A central directory listing 30,000 entries.
    let names: Vec<&'static str> = (0..30_000)
        .map(|i| &*Box::leak(format!("{i}.npy").into_boxed_str()))
        .collect();
    let many: Vec<Entry> = names.iter().map(|n| Entry::honest(n, b"", false)).collect();
    let detail = assert_refused(&app, upload(&app, npz_form(zip(&many))).await, 422, "file").await;
    assert!(detail.contains("lists 30000 entries"), "{detail}");

    // A corrupt deflate stream is the upload's fault.
    let mut broken = Entry::honest("x.npy", &npy("|u1", "(100, 100)", &[7; 10_000]), true);
    let mid = broken.data.len() / 2;
    broken.data[mid..].fill(0xff);
    let bytes = zip(&[broken, Entry::honest("y.npy", &labels_npy(100), false)]);
    assert_refused(&app, upload(&app, npz_form(bytes)).await, 422, "file").await;
}

#[tokio::test]
async fn gzip_idx_bombs_are_stopped_by_their_header_or_while_decoding() {
    let app = spawn_app_with(|c| c.max_dataset_bytes = 4 << 20).await;
    let labels = gzip(&[idx_header(&[100]), vec![1; 100]].concat());

    // 10 GB declared from a few hundred bytes: impossible for deflate, refused before decoding.
    let images = gzip(&idx_header(&[10_000, 1000, 1000]));
    let detail = assert_refused(
        &app,
        upload(&app, idx_form(images, labels.clone())).await,
        422,
        "images",
    )
    .await;
    assert!(detail.contains("cannot decompress to that much"), "{detail}");

    // 100 MB of zeros honestly declared: over the cap, refused before decoding.
    let mut bomb = idx_header(&[100, 1000, 1000]);
    bomb.resize(bomb.len() + 100_000_000, 0);
    let images = gzip(&bomb);
    assert!(images.len() < 200_000, "the bomb is {} bytes", images.len());
    let detail = assert_refused(
        &app,
        upload(&app, idx_form(images, labels.clone())).await,
        422,
        "images",
    )
    .await;
    assert!(
        detail.contains("over this server's limit of 4194304 bytes"),
        "{detail}"
    );

    // A small header followed by the same 100 MB: decoding stops right after the declared size.
    let mut liar = idx_header(&[100, 28, 28]);
    liar.resize(liar.len() + 100_000_000, 0);
    let detail = assert_refused(
        &app,
        upload(&app, idx_form(gzip(&liar), labels.clone())).await,
        422,
        "images",
    )
    .await;
    assert!(
        detail.contains("the gzip stream holds more than that"),
        "{detail}"
    );

    // Raw IDX declaring more than the file holds, and labels over the cap.
    let mut raw = idx_header(&[4_000_000, 1000, 1000]);
    raw.extend_from_slice(&[0; 64]);
    let detail = assert_refused(&app, upload(&app, idx_form(raw, labels)).await, 422, "images").await;
    assert!(detail.contains("the file holds only 64 bytes"), "{detail}");
    let images = gzip(&[idx_header(&[1000, 2, 2]), vec![0; 4000]].concat());
    let mut many = idx_header(&[1_000_000]);
    many.resize(many.len() + 1_000_000, 0);
    let detail = assert_refused(
        &app,
        upload(&app, idx_form(images, gzip(&many))).await,
        422,
        "labels",
    )
    .await;
    assert!(detail.contains("decodes to 8000000 bytes"), "{detail}");
}

/// A body of `len` bytes of `byte`, produced as it is sent instead of held in memory.
fn generated(len: usize, byte: u8) -> reqwest::Body {
    let chunk = Bytes::from(vec![byte; 1 << 16]);
    let chunks = len.div_ceil(chunk.len());
    let last = len - (chunks - 1) * chunk.len();
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let c = if i + 1 == chunks {
            chunk.slice(..last)
        } else {
            chunk.clone()
        };
        Ok::<Bytes, std::io::Error>(c)
    }));
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn a_300_mb_name_part_is_refused_once_it_passes_4096_bytes() {
    let app = spawn_app().await;
    let len = 300_000_000;
    let form = Form::new().part("name", Part::stream_with_length(generated(len, b'a'), len as u64));
    // The server answers as soon as the part passes the limit and closes the connection without
    // reading the rest; the client gets the answer while still sending.
    let res = upload(&app, form).await;
    let detail = assert_refused(&app, res, 422, "name").await;
    assert!(detail.contains("longer than 4096 bytes"), "{detail}");
}

#[tokio::test]
async fn a_name_taken_from_a_file_name_obeys_the_200_character_rule() {
    let app = spawn_app().await;
    let x = npy("|u1", "(2, 2)", &[0, 1, 2, 3]);
    let long = format!("{}.npy", "x".repeat(250));
    let form = Form::new()
        .part("x", part(x.clone(), &long))
        .part("y", part(labels_npy(2), "y.npy"));
    let detail = assert_refused(&app, upload(&app, form).await, 422, "name").await;
    assert!(detail.contains("file name of part x"), "{detail}");
    assert!(detail.contains("1-200 characters, not 254"), "{detail}");

    let fits = format!("{}.npy", "é".repeat(196));
    let form = Form::new()
        .part("x", part(x, &fits))
        .part("y", part(labels_npy(2), "y.npy"));
    let res = upload(&app, form).await;
    assert_eq!(res.status(), 201);
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["name"], fits);
}

#[tokio::test]
async fn an_endless_csv_row_or_one_past_the_cap_is_a_422() {
    let app = spawn_app_with(|c| c.max_dataset_bytes = 1 << 20).await;
    let mut csv = "label,a\n1,".to_string();
    csv.push_str(&"9".repeat(17 << 20));
    let form = Form::new().part("file", part(csv.into_bytes(), "d.csv"));
    let detail = assert_refused(&app, upload(&app, form).await, 422, "file").await;
    assert!(
        detail.contains("has a row longer than 16777216 bytes"),
        "{detail}"
    );

    let csv = "label,a,b\n".to_string() + &"1,2,3\n".repeat(100_000);
    let form = Form::new().part("file", part(csv.into_bytes(), "d.csv"));
    let detail = assert_refused(&app, upload(&app, form).await, 422, "file").await;
    assert!(detail.contains("the CSV up to line"), "{detail}");
}

#[tokio::test]
async fn uploads_past_the_concurrency_limit_get_503_with_retry_after_before_their_body_is_read() {
    let app = spawn_app_with(|c| c.max_concurrent_uploads = 1).await;
    // The first upload sends its first bytes and then waits, holding the only slot.
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let x = npy("|u1", "(2, 2)", &[0, 1, 2, 3]);
    let first_chunk = Bytes::from(x[..10].to_vec());
    let rest = Bytes::from(x[10..].to_vec());
    let stream = futures_util::stream::unfold((0, Some(wait)), move |(step, wait)| {
        let (first_chunk, rest) = (first_chunk.clone(), rest.clone());
        async move {
            match step {
                0 => Some((Ok::<Bytes, std::io::Error>(first_chunk), (1, wait))),
                1 => {
                    let _ = wait.expect("waits once").await;
                    Some((Ok(rest), (2, None)))
                }
                _ => None,
            }
        }
    });
    let form = Form::new()
        .part(
            "x",
            Part::stream_with_length(reqwest::Body::wrap_stream(stream), x.len() as u64).file_name("x.npy"),
        )
        .part("y", part(labels_npy(2), "y.npy"));
    let client = app.client.clone();
    let url = app.url("/v1/datasets");
    let first = tokio::spawn(async move { client.post(url).multipart(form).send().await });

    // Wait until the first upload holds the slot (its temporary file exists).
    let tmp = app.dir.path().join("fitd-data/tmp");
    for _ in 0..200 {
        if std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let second = || {
        Form::new()
            .part("x", part(npy("|u1", "(2, 2)", &[0, 1, 2, 3]), "x.npy"))
            .part("y", part(labels_npy(2), "y.npy"))
    };
    let res = upload(&app, second()).await;
    assert_eq!(res.headers()["retry-after"], "5");
    let problem = assert_problem(res, 503).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("retry in 5 seconds"),
        "{problem}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    release.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 201);
    // The slot is free again.
    assert_eq!(upload(&app, second()).await.status(), 201);
}
