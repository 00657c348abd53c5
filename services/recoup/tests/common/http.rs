//! A tiny HTTP/1.1 client on a TCP stream, and upload bodies, for the tests of the HTTP API.

use std::io::{Cursor, Write};
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One answer of the server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// Reads one answer (skipping `100 Continue`), its body by length, chunks or to the end.
pub async fn read_answer<R: AsyncBufRead + Unpin>(reader: &mut R) -> Answer {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        if status == 100 {
            continue;
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if answer.header("transfer-encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await.unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                answer.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = answer.header("content-length") {
            answer.body = vec![0; length.parse().unwrap()];
            reader.read_exact(&mut answer.body).await.unwrap();
        } else {
            reader.read_to_end(&mut answer.body).await.unwrap();
        }
        return answer;
    }
}

/// A request's head; `content` is the `Content-Type` and the body's length, if it has one.
pub fn head(
    method: &str,
    path: &str,
    tenant: &str,
    content: Option<(&str, usize)>,
    extra: &str,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nx-recoup-tenant: {tenant}\r\n{extra}"
    );
    if let Some((content_type, length)) = content {
        head += &format!("content-type: {content_type}\r\ncontent-length: {length}\r\n");
    }
    head + "\r\n"
}

pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(request).await.unwrap();
    read_answer(&mut BufReader::new(read)).await
}

pub async fn post(
    addr: SocketAddr,
    tenant: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Answer {
    let mut request = head("POST", path, tenant, Some((content_type, body.len())), "").into_bytes();
    request.extend_from_slice(body);
    exchange(addr, &request).await
}

pub async fn get(addr: SocketAddr, tenant: &str, path: &str) -> Answer {
    exchange(addr, head("GET", path, tenant, None, "").as_bytes()).await
}

/// A one-sheet workbook named `sheet` with inline strings and numbers.
pub fn xlsx(sheet: &str, rows: &[&[&str]]) -> Vec<u8> {
    let header = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#;
    let main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let pkg = "http://schemas.openxmlformats.org/package/2006/relationships";
    let mut data = String::new();
    for (r, row) in rows.iter().enumerate() {
        data += &format!(r#"<row r="{}">"#, r + 1);
        for (c, cell) in row.iter().enumerate() {
            let at = format!("{}{}", char::from(b'A' + c as u8), r + 1);
            data += &match cell.parse::<f64>() {
                Ok(n) => format!(r#"<c r="{at}"><v>{n}</v></c>"#),
                Err(_) => format!(r#"<c r="{at}" t="inlineStr"><is><t>{cell}</t></is></c>"#),
            };
        }
        data += "</row>";
    }
    let parts = [
        (
            "[Content_Types].xml",
            format!(
                r#"{header}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#
            ),
        ),
        (
            "_rels/.rels",
            format!(
                r#"{header}<Relationships xmlns="{pkg}"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
            ),
        ),
        (
            "xl/workbook.xml",
            format!(
                r#"{header}<workbook xmlns="{main}" xmlns:r="{rel}"><sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>"#
            ),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            format!(
                r#"{header}<Relationships xmlns="{pkg}"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#
            ),
        ),
        (
            "xl/worksheets/sheet1.xml",
            format!(
                r#"{header}<worksheet xmlns="{main}" xmlns:r="{rel}"><sheetData>{data}</sheetData></worksheet>"#
            ),
        ),
    ];
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, content) in parts {
        zip.start_file(path, options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}
