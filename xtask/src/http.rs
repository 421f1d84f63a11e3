//! A minimal blocking HTTP/1.1 client for the demo: one request per connection.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result};

/// A response: status code and the raw body (still chunk-encoded if the server chunked it).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Sends `method path` with an optional JSON body to 127.0.0.1:port and reads the whole response.
pub fn request(port: u16, method: &str, path: &str, json: Option<&str>) -> Result<Response> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_mins(1)))?;
    let body = json.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if json.is_some() {
        let _ = write!(
            req,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status line in {:?}", &text[..text.len().min(80)]))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn sends_a_json_post_and_reads_status_and_body() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let len: usize = head
                .iter()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            conn.write_all(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 2\r\n\r\nno")
                .unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let r = request(port, "POST", "/v1/embeddings", Some(r#"{"input":"x"}"#)).unwrap();
        assert_eq!((r.status, r.body.as_str()), (501, "no"));
        let (head, body) = server.join().unwrap();
        assert_eq!(head[0], "POST /v1/embeddings HTTP/1.1\r\n");
        assert!(head.iter().all(|l| l.ends_with("\r\n")), "{head:?}");
        assert!(
            head.contains(&"Content-Length: 13\r\n".to_owned()),
            "{head:?}"
        );
        assert!(head.contains(&"Connection: close\r\n".to_owned()));
        assert_eq!(body, r#"{"input":"x"}"#);
    }
}
