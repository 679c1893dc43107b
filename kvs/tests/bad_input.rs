//! Bad input from the network: each case gets a typed error or a closed stream, the node
//! keeps serving other clients, and no earlier acknowledged write is lost or changed.

mod common;

use std::time::Duration;

use bytes::Bytes;
use calm_kvs::wire::{PROTOCOL_VERSION, decode_body, encode_frame, read_frame};
use calm_kvs::{
    KvsError, NodeConfig, Op, OpError, ProtocolError, ReadValue, Request, RequestBody, Response,
    ResponseBody, Store, WorkerConfig,
};
use common::LocalServer;

fn valid_frame(id: u64) -> Vec<u8> {
    encode_frame(&Request {
        id,
        body: RequestBody::ops(vec![Op::Get {
            key: Bytes::from_static(b"before"),
            meta: false,
        }]),
    })
    .unwrap()
}

/// Sends `bytes` on a fresh stream, finishes it, and returns every response frame the node
/// sent back before closing the stream.
async fn exchange(server: &LocalServer, bytes: &[u8]) -> Vec<Response> {
    let (_endpoint, conn) = server.raw_connection().await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let mut responses = Vec::new();
    let read_all = async {
        while let Ok(Some(body)) = read_frame(&mut recv, 1 << 20).await {
            responses.push(decode_body::<Response>(&body).expect("node responses decode"));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the node answers or closes the stream, it does not hang");
    responses
}

fn refused(responses: &[Response]) -> &ProtocolError {
    match responses.last() {
        Some(Response {
            id: 0,
            body: ResponseBody::Refused(e),
        }) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn still_serving(server: &LocalServer) {
    let client = server.client().await;
    assert_eq!(
        client.get("before").await.unwrap(),
        Some(ReadValue::Lww {
            value: Bytes::from_static(b"acknowledged"),
            stamp: None
        }),
        "an acknowledged write was lost or changed"
    );
    client.put("after", "ok").await.unwrap();
    client.close().await;
}

async fn server_with_a_write() -> LocalServer {
    let config = NodeConfig {
        threads: 2,
        max_frame_bytes: 64 * 1024,
        worker: WorkerConfig {
            max_key_bytes: 64,
            max_value_bytes: 1024,
            ..WorkerConfig::default()
        },
        ..NodeConfig::default()
    };
    let server = LocalServer::start(config).await;
    let client = server.client().await;
    client.put("before", "acknowledged").await.unwrap();
    client.close().await;
    server
}

#[tokio::test]
async fn garbage_bytes() {
    let server = server_with_a_write().await;
    // Text where a frame should be: its first four bytes read as a huge length.
    let r = exchange(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        matches!(refused(&r), ProtocolError::FrameTooLarge { .. }),
        "{r:?}"
    );
    // A frame of the right version whose payload is noise.
    let mut frame = vec![0, 0, 0, 9, PROTOCOL_VERSION];
    frame.extend([0xff, 0xfe, 0x00, 0x13, 0x37, 0xff, 0xff, 0xff]);
    let r = exchange(&server, &frame).await;
    assert!(matches!(refused(&r), ProtocolError::Malformed(_)), "{r:?}");
    still_serving(&server).await;
}

#[tokio::test]
async fn truncated_frame() {
    let server = server_with_a_write().await;
    let frame = valid_frame(1);
    let r = exchange(&server, &frame[..frame.len() / 2]).await;
    assert!(
        r.is_empty(),
        "a truncated frame is not answered, the stream just closes: {r:?}"
    );
    // The valid frame before a truncated one is still answered.
    let mut two = valid_frame(5);
    two.extend_from_slice(&frame[..3]);
    let r = exchange(&server, &two).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].id, 5);
    still_serving(&server).await;
}

#[tokio::test]
async fn frame_over_the_size_limit() {
    let server = server_with_a_write().await;
    let mut frame = ((64 * 1024 + 1) as u32).to_be_bytes().to_vec();
    frame.push(PROTOCOL_VERSION);
    let r = exchange(&server, &frame).await;
    assert_eq!(
        refused(&r),
        &ProtocolError::FrameTooLarge {
            len: 64 * 1024 + 1,
            max: 64 * 1024
        }
    );
    still_serving(&server).await;
}

#[tokio::test]
async fn unknown_protocol_version() {
    let server = server_with_a_write().await;
    let mut frame = valid_frame(1);
    frame[4] = PROTOCOL_VERSION + 1;
    let r = exchange(&server, &frame).await;
    assert_eq!(
        refused(&r),
        &ProtocolError::UnsupportedVersion {
            got: PROTOCOL_VERSION + 1,
            supported: PROTOCOL_VERSION
        }
    );
    assert!(refused(&r).to_string().contains("upgrade"));
    still_serving(&server).await;
}

#[tokio::test]
async fn unknown_request_type() {
    let server = server_with_a_write().await;
    let mut frame = valid_frame(1);
    frame[6] = 77; // the request body's variant: no such request
    let r = exchange(&server, &frame).await;
    assert!(matches!(refused(&r), ProtocolError::Malformed(_)), "{r:?}");
    still_serving(&server).await;
}

#[tokio::test]
async fn oversized_key_or_value_and_wrong_kind() {
    let server = server_with_a_write().await;
    let client = server.client().await;
    let long_key = "k".repeat(65);
    let err = client.put(long_key.clone(), "v").await.unwrap_err();
    assert!(
        matches!(err, KvsError::Op(OpError::KeyTooLong { len: 65, max: 64 })),
        "{err}"
    );
    let err = client.put("big", vec![0u8; 1025]).await.unwrap_err();
    assert!(
        matches!(
            err,
            KvsError::Op(OpError::ValueTooLarge {
                len: 1025,
                max: 1024
            })
        ),
        "{err}"
    );
    // A request larger than a frame may be is refused by the node, which closes the stream.
    let err = client.put("huge", vec![0u8; 70 * 1024]).await.unwrap_err();
    assert!(
        matches!(err, KvsError::Refused(ProtocolError::FrameTooLarge { .. })),
        "{err}"
    );
    let client = server.client().await;
    let err = client.increment("before", 1).await.unwrap_err();
    assert!(
        matches!(err, KvsError::Op(OpError::KindMismatch { .. })),
        "{err}"
    );
    assert_eq!(
        client.get(long_key).await.unwrap_err().to_string(),
        "key of 65 bytes is longer than the limit of 64 bytes"
    );
    still_serving(&server).await;
}

#[tokio::test]
async fn client_disconnects_mid_request() {
    let server = server_with_a_write().await;
    for _ in 0..5 {
        let (endpoint, conn) = server.raw_connection().await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let frame = valid_frame(9);
        send.write_all(&frame[..frame.len() - 2]).await.unwrap();
        conn.close(0u32.into(), b"gone");
        drop(endpoint);
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn a_client_that_sends_and_never_reads_stalls_only_itself() {
    let server = server_with_a_write().await;
    let client = server.client().await;
    client.put("blob", vec![7u8; 1000]).await.unwrap();
    // Each request reads the 1 KB value 16 times: answers pile up far past what the
    // transport will buffer for a reader that never reads.
    let frame = encode_frame(&Request {
        id: 1,
        body: RequestBody::ops(vec![
            Op::Get {
                key: Bytes::from_static(b"blob"),
                meta: false
            };
            16
        ]),
    })
    .unwrap();
    let (_endpoint, conn) = server.raw_connection().await;
    let (mut send, _recv_never_read) = conn.open_bi().await.unwrap();
    let flood = tokio::spawn(async move {
        for _ in 0..50_000 {
            if send.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Backpressure: the node stopped reading that stream, so the flooder is stuck writing
    // (50,000 requests would need 800 MB of answers to be buffered somewhere).
    assert!(
        !flood.is_finished(),
        "the node kept reading a stream whose answers nobody reads"
    );
    // Others are served meanwhile.
    for i in 0..100 {
        client.put(format!("other/{i}"), "v").await.unwrap();
    }
    still_serving(&server).await;
    flood.abort();
}
